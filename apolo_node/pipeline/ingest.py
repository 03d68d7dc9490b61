"""``apolo-node ingest``: files and folders through the same store as the network, no SCP,
then through the de-identification and vision stages, as ``serve`` would take them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from apolo_node.catalog.records import queue_stable_studies
from apolo_node.config import Config
from apolo_node.deid.isolate import IsolatedCleaner, process_count
from apolo_node.logs import event, get_logger
from apolo_node.pipeline import deidentify, describe
from apolo_node.pipeline.parts import Parts

log = get_logger("ingest")
PART10_MAGIC_AT = 128


@dataclass
class IngestSummary:
    """Counts, and for each refused file its index among the inputs and the reason (no PHI)."""

    stored: int = 0
    duplicates: int = 0
    refused: list[tuple[Path, str]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    studies: set[str] = field(default_factory=set)


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named, and every file under folders named, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")


def is_part10(head: bytes) -> bool:
    return len(head) >= PART10_MAGIC_AT + 4 and head[PART10_MAGIC_AT:PART10_MAGIC_AT + 4] == b"DICM"


def ingest(cfg: Config, paths: list[Path]) -> IngestSummary:
    """Store every DICOM Part 10 file under ``paths``; queue the studies fed at once."""
    parts = Parts(cfg)
    engine, store = parts.engine, parts.store
    try:
        summary = IngestSummary()
        for path in iter_files(paths):
            raw = path.read_bytes()
            if not is_part10(raw):
                summary.skipped.append(path)
                continue
            result = store.store(raw, calling_aet=None)
            if not result.ok:
                summary.refused.append((path, f"0x{result.status:04X} {result.comment}"))
            elif result.duplicate:
                summary.duplicates += 1
            else:
                summary.stored += 1
            if result.ok and result.study_uid:
                summary.studies.add(result.study_uid)
        if summary.studies:
            for uid in queue_stable_studies(engine, 0, only=summary.studies):
                event(log, "study.queued", study_uid=uid)
            # The same stages the node runs, on the same parts: work the queue until it is empty.
            deidentifier, spool = parts.deidentifier, parts.spool
            cleaner = IsolatedCleaner(deidentifier, cfg.deid.instance_timeout, process_count(cfg))
            with cleaner:
                while deidentify.run_once(
                    cfg, engine, spool, deidentifier, deidentify.worker_name(), vault=parts.vault,
                    cleaner=cleaner,
                ):
                    pass
            while describe.run_once(engine, spool, parts.vision, cfg, describe.worker_name()):
                pass
        event(
            log, "ingest.done", stored=summary.stored, duplicates=summary.duplicates,
            refused=len(summary.refused), skipped=len(summary.skipped),
        )
        return summary
    finally:
        parts.close()
