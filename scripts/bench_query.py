"""Benchmark ``apolo-node ask``: retrieval alone and the whole ask, on a large synthetic catalog.

Builds a catalog of FINDINGS synthetic findings over STUDIES studies (one series, three
instances and one report per study) on SQLite, and on PostgreSQL when ``--postgres URL`` names
an empty database or a throwaway cluster can be started (tests/peers.py), then times a set of
questions with and without filters, each ``--rounds`` times: retrieval alone, and ``ask`` with
the offline (extractive) answerer, which also writes the answer and audit rows. Text search
only, and text plus semantic search when the embedding model is installed. Semantic ranking
reads the findings' stored vectors (``finding_embedding``, migration 0010): the bench embeds
and stores every finding first, as the vision stage would at report time, and prints how long
that took and how long a fresh process takes to read them all (its first semantic question).
The question itself is embedded for every question; the text cache of the embedder is
cleared before each one (``--warm`` keeps it).

    .venv/bin/python scripts/bench_query.py                      # 100,000 findings, 10,000 studies
    .venv/bin/python scripts/bench_query.py --findings 20000 --studies 2000 --no-postgres
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, insert, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apolo_node.catalog.engine import make_engine
from apolo_node.catalog.migrate import upgrade
from apolo_node.catalog.models import (
    FindingRow,
    Instance,
    Report,
    Series,
    Study,
    utcnow,
)
from apolo_node.catalog.search import Filters
from apolo_node.config import ReasoningSettings
from apolo_node.reasoning import embedding, vectors
from apolo_node.reasoning.ask import ask
from apolo_node.reasoning.extractive import ExtractiveAnswerer
from apolo_node.reasoning.retrieval import Retriever

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
KINDS = [  # (modality, body part, share)
    ("CT", "CHEST", 0.35), ("CR", "CHEST", 0.2), ("DX", "CHEST", 0.1), ("MR", "HEAD", 0.15),
    ("CT", "ABDOMEN", 0.1), ("MR", "KNEE", 0.1),
]
FINDINGS = {  # label: (code value, scheme, meaning, description templates)
    "Nodule": ("27925004", "SCT", "Nodule", ["Solid nodule of {n} mm in the {side} {lobe}",
                                             "Ground-glass nodule, {n} mm, {side} {lobe}"]),
    "Mass": ("4147007", "SCT", "Mass", ["Lobulated mass of {n} mm in the {side} {lobe}"]),
    "Pleural effusion": ("60046008", "SCT", "Pleural effusion", ["{size} {side} pleural effusion",
                                                                 "Blunting of the {side} costophrenic angle"]),
    "Pneumothorax": ("36118008", "SCT", "Pneumothorax", ["{size} {side} apical pneumothorax, {n} mm rim"]),
    "Consolidation": ("95436008", "SCT", "Lung consolidation", ["Consolidation of the {side} {lobe}"]),
    "Atelectasis": ("46621007", "SCT", "Atelectasis", ["Linear atelectasis at the {side} base"]),
    "Cardiomegaly": ("8186001", "SCT", "Cardiomegaly", ["Enlarged cardiac silhouette, ratio 0.{n}"]),
    "Fracture": ("125605004", "SCT", "Fracture of bone", ["Fracture of the {side} {bone}",
                                                          "Healing fracture of the {side} {bone}"]),
    "Lesion": ("52988006", "SCT", "Lesion", ["{size} white matter lesion, {side} frontal lobe",
                                             "Hypodense liver lesion of {n} mm"]),
    "Metal": ("425620007", "SCT", "Metal", ["Metal clip near the {side} {bone}"]),
    "Calcification": ("CALC-1A2B3", "99APOLO", "Calcification", ["Calcified granuloma, {side} {lobe}"]),
    "Meniscal tear": ("MENISC-4C5D6", "99APOLO", "Meniscal tear", ["Tear of the {side} medial meniscus"]),
}
WORDS = {
    "side": ["left", "right"], "lobe": ["upper lobe", "middle lobe", "lower lobe"],
    "size": ["Small", "Moderate", "Large"], "bone": ["sixth rib", "clavicle", "femur", "radius"],
}
QUESTIONS: list[tuple[str, Callable[[list[str]], Filters]]] = [
    ("Is there a pneumothorax?", lambda s: Filters()),
    ("Any pulmonary nodules larger than 8 mm?", lambda s: Filters(modality="CT")),
    ("Show pleural effusions", lambda s: Filters(body_part="CHEST", since=dt.date(2022, 1, 1))),
    ("air in the chest", lambda s: Filters()),
    ("collapsed lung", lambda s: Filters(body_part="CHEST")),
    ("What was found?", lambda s: Filters(study_uid=s[0])),
    ("broken bones", lambda s: Filters(since=dt.date(2023, 1, 1), until=dt.date(2023, 6, 30))),
    ("white matter lesions", lambda s: Filters(modality="MR", body_part="HEAD")),
    ("Is the heart enlarged?", lambda s: Filters()),
    ("fracture of the femur", lambda s: Filters(study_uid=s[1])),
]


def build(engine: Engine, n_findings: int, n_studies: int, seed: int = 7) -> list[str]:
    """The synthetic catalog; the study UIDs, in order."""
    rng = random.Random(seed)
    now = utcnow()
    studies, series, instances, reports = [], [], [], []
    kinds = rng.choices(KINDS, weights=[k[2] for k in KINDS], k=n_studies)
    for i in range(n_studies):
        uid = f"2.25.{10**12 + i}"
        modality, body_part, _ = kinds[i]
        date = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(5 * 365))
        studies.append({"id": i + 1, "study_uid": uid, "status": "reported", "study_date": date, "instances": 3,
                        "received_at": now, "last_received_at": now, "updated_at": now})
        series.append({"id": i + 1, "study_id": i + 1, "series_uid": f"{uid}.1", "modality": modality,
                       "body_part": body_part})
        for k in range(3):
            instances.append({"study_id": i + 1, "series_id": i + 1, "sop_instance_uid": f"{uid}.1.{k}",
                              "sop_class_uid": CT_IMAGE, "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                              "path": f"clean/{uid}/{k}.dcm", "size": 1000, "received_at": now, "state": "clean"})
        reports.append({"id": i + 1, "study_id": i + 1, "sop_instance_uid": f"{uid}.8.1", "series_uid": f"{uid}.8",
                        "path": f"reports/{uid}/sr.dcm", "algorithm": "bench", "algorithm_version": "1",
                        "images": 3, "unparsed": 0, "created_at": now})
    labels = list(FINDINGS)
    findings = []
    for j in range(n_findings):
        study = j % n_studies
        uid = studies[study]["study_uid"]
        label = rng.choice(labels)
        value, scheme, meaning, templates = FINDINGS[label]
        words = {k: rng.choice(v) for k, v in WORDS.items()}
        description = rng.choice(templates).format(n=rng.randrange(3, 30), **words)
        x, y = rng.uniform(0, 400), rng.uniform(0, 400)
        findings.append({
            "report_id": study + 1, "study_id": study + 1, "tracking_uid": f"{uid}.9.{j}",
            "sop_instance_uid": f"{uid}.1.{j % 3}", "sop_class_uid": CT_IMAGE, "frame": 1, "label": label,
            "code_value": value, "code_scheme": scheme, "code_meaning": meaning, "description": description,
            "x1": x, "y1": y, "x2": x + 40, "y2": y + 30, "confidence": round(rng.uniform(0.2, 0.99), 2),
            "laterality": words["side"], "location": None,
            "measurements": json.dumps([{"name": ["42798000", "SCT", "Area"], "value": 12.5,
                                         "unit": ["mm2", "UCUM", "mm2"]}]),
            "model": "bench",
        })
    with engine.begin() as conn:
        for table, rows in ((Study, studies), (Series, series), (Instance, instances), (Report, reports),
                            (FindingRow, findings)):
            for lo in range(0, len(rows), 5000):
                conn.execute(insert(table), rows[lo:lo + 5000])
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return [s["study_uid"] for s in studies]


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(median, 95th percentile), in milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    if len(ms) == 1:
        return ms[0], ms[0]
    return statistics.median(ms), statistics.quantiles(ms, n=20, method="inclusive")[18]


def bench(name: str, engine: Engine, args: argparse.Namespace, embedder: embedding.Embedder | None) -> list[str]:
    started = time.perf_counter()
    upgrade(engine)
    study_uids = build(engine, args.findings, args.studies)
    built = time.perf_counter() - started
    lines = [f"{name}: built {args.findings} findings over {args.studies} studies in {built:.1f} s"]
    answerer = ExtractiveAnswerer()
    modes = [("text", None)] + ([("text+semantic", embedder)] if embedder else [])
    if embedder is not None:
        t0 = time.perf_counter()
        stored, _ = vectors.embed_missing(engine, embedder)
        lines.append(f"  stored {stored} finding embeddings in {time.perf_counter() - t0:.1f} s (report time, once)")
        t0 = time.perf_counter()
        index = vectors.index_for(engine, embedder.key)
        index.update(engine, embedder, 0)
        lines.append(f"  read {len(index)} stored vectors in {time.perf_counter() - t0:.2f} s "
                     "(once per process: a running node keeps them)")
    for mode, emb in modes:
        retriever = Retriever(engine, limit=args.evidence, embedder=emb)
        settings = ReasoningSettings(evidence=args.evidence, semantic=emb is not None)
        timings: dict[str, list[float]] = {"retrieval": [], "ask": []}
        for _ in range(args.rounds):
            for question, filters_of in QUESTIONS:
                filters = filters_of(study_uids)
                for what in ("retrieval", "ask"):
                    if emb is not None and not args.warm:
                        emb._cache.clear()
                    t0 = time.perf_counter()
                    if what == "retrieval":
                        retriever.retrieve(question, filters)
                    else:
                        ask(engine, settings, question, filters, answerer=answerer, retriever=retriever, actor="bench")
                    timings[what].append(time.perf_counter() - t0)
        for what, samples in timings.items():
            p50, p95 = percentiles(samples)
            lines.append(f"  {what:9s} {mode:13s} n={len(samples):3d}  median {p50:8.1f} ms  p95 {p95:8.1f} ms")
    return lines


@contextmanager
def postgres(url: str | None, wanted: bool) -> Iterator[str | None]:
    """The PostgreSQL URL to use: given, or a throwaway cluster's, or None."""
    if url or not wanted:
        yield url
        return
    try:
        from tests.peers import PeerError, PostgresCluster, postgres_bin_dir
    except ImportError:
        yield None
        return
    if postgres_bin_dir() is None:
        yield None
        return
    try:
        cluster = PostgresCluster().start()
    except PeerError as exc:
        print(f"PostgreSQL could not start ({exc}); SQLite only", file=sys.stderr)
        yield None
        return
    try:
        yield cluster.url
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--findings", type=int, default=100_000)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="times each question is asked")
    parser.add_argument("--evidence", type=int, default=20, help="[reasoning] evidence")
    parser.add_argument("--postgres", metavar="URL", help="an empty PostgreSQL database to fill")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--no-semantic", action="store_true", help="text search only")
    parser.add_argument("--warm", action="store_true", help="keep embeddings between questions")
    args = parser.parse_args()
    if args.findings < 1 or args.studies < 1:
        parser.error("--findings and --studies must be >= 1")

    import logging

    logging.getLogger("apolo").setLevel(logging.WARNING)
    embedder = None
    if not args.no_semantic and embedding.available() is None:
        t0 = time.perf_counter()
        embedder = embedding.Embedder()
        print(f"embedding model loaded in {time.perf_counter() - t0:.1f} s (once per process)")
    elif not args.no_semantic:
        print(f"semantic search off: {embedding.available()}")
    print(f"{len(QUESTIONS)} questions x {args.rounds} rounds, evidence {args.evidence}, "
          f"embeddings {'warm' if args.warm else 'cold for every question'}")
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.sqlite'}")
        try:
            print("\n".join(bench("SQLite", engine, args, embedder)), flush=True)
        finally:
            engine.dispose()
    with postgres(args.postgres, not args.no_postgres) as url:
        if url:
            engine = make_engine(url)
            try:
                print("\n".join(bench("PostgreSQL", engine, args, embedder)), flush=True)
            finally:
                engine.dispose()


if __name__ == "__main__":
    main()
