"""An answer becomes DICOM for the PACS: per study it cites, an answer SR and a presentation state
of the cited boxes, written de-identified under ``results/<study>/`` and queued in the outbox.

They are built in the de-identified study (the reasoning stage never sees PHI); the sender
re-links them through the vault to the original study just before the C-STORE. A GSPS covers
images of one size, polarity and rescale, so the cited boxes are grouped by those; boxes on
colour images (RGB, YBR) go in a Color Softcopy Presentation State instead, queued as the same
kind ("gsps"); PALETTE COLOR images get none (neither kind draws on them), only the SR.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Engine, select

import apolo_node
from apolo_node.catalog import outbox
from apolo_node.catalog.models import Instance
from apolo_node.catalog.reports import report_path
from apolo_node.findings import Algorithm, Finding
from apolo_node.logs import event, get_logger
from apolo_node.reasoning.ask import AskResult
from apolo_node.reasoning.evidence import Evidence
from apolo_node.spool import RESULTS, Spool
from apolo_node.sr import CitedFinding, answer_report, grounding_presentation_state, presentable

log = get_logger("results")


@dataclass(frozen=True)
class QueuedResult:
    """One object written and queued: which study, which kind, its spool path."""

    study_uid: str
    kind: str
    sop_instance_uid: str
    path: str


def _paths(engine: Engine, study_uid: str, sops: Sequence[str]) -> tuple[dict[str, str], str]:
    """Clean-file paths of the cited instances, and the study's TID 1500 SR path."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Instance.sop_instance_uid, Instance.clean_path).where(Instance.sop_instance_uid.in_(list(sops)))
        ).all()
        conn.rollback()
    report = report_path(engine, study_uid)
    if report is None:
        raise LookupError(f"study {study_uid} has no report to cite")
    return {sop: path for sop, path in rows if path}, report


def _group_key(ds: Dataset) -> tuple[object, ...]:
    return (
        int(ds.Rows), int(ds.Columns), str(ds.get("PhotometricInterpretation", "")),
        str(ds.get("RescaleSlope", "")), str(ds.get("RescaleIntercept", "")),
    )


def _write(spool: Spool, engine: Engine, study_uid: str, kind: str, ds: Dataset) -> QueuedResult:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    sop = str(ds.SOPInstanceUID)
    path = f"{RESULTS}/{study_uid}/{sop}.dcm"
    spool.write(path, buffer.getvalue())  # durable before it is queued
    outbox.enqueue(engine, study_uid, kind, sop, path)
    return QueuedResult(study_uid, kind, sop, path)


def _study_results(
    engine: Engine, spool: Spool, result: AskResult, study_uid: str, cited: list[Evidence]
) -> list[QueuedResult]:
    clean, sr_path = _paths(engine, study_uid, [e.finding.sop_instance_uid for e in cited])
    with disable_value_validation():
        images = {sop: dcmread(spool.root / path, stop_before_pixels=True) for sop, path in clean.items()}
        report = dcmread(spool.root / sr_path)
    algorithm = Algorithm(result.answer.backend[:64], apolo_node.__version__)
    answer = answer_report(
        result.question, result.answer.text, result.answer.trace,
        [CitedFinding(e.finding, e.sr_sop_instance_uid, e.sr_series_uid) for e in cited],
        [*images.values(), report], algorithm,
        series_instance_uid=generate_uid(prefix=None), sop_instance_uid=generate_uid(prefix=None),
    )
    queued = [_write(spool, engine, study_uid, outbox.ANSWER_SR, answer)]
    groups: dict[tuple[object, ...], list[Finding]] = defaultdict(list)
    for e in cited:
        image = images.get(e.finding.sop_instance_uid)
        if e.finding.box is not None and image is not None and presentable(image):
            groups[_group_key(image)].append(e.finding)
    for findings in groups.values():
        referenced = list({f.sop_instance_uid: images[f.sop_instance_uid] for f in findings}.values())
        gsps = grounding_presentation_state(
            findings, referenced, series_instance_uid=generate_uid(prefix=None),
            sop_instance_uid=generate_uid(prefix=None), algorithm=algorithm,
        )
        queued.append(_write(spool, engine, study_uid, outbox.GSPS, gsps))
    return queued


def queue_answer(engine: Engine, spool: Spool, result: AskResult) -> list[QueuedResult]:
    """Write and queue the answer SR and GSPS of every study the answer cites; what was queued."""
    cited_uids = set(result.answer.citations)
    by_study: dict[str, list[Evidence]] = defaultdict(list)
    for e in result.retrieved.evidence:
        if e.tracking_uid in cited_uids:
            by_study[e.study_uid].append(e)
    queued: list[QueuedResult] = []
    for study_uid, cited in by_study.items():
        queued.extend(_study_results(engine, spool, result, study_uid, cited))
    event(log, "answer.queued", answer_id=result.answer_id, studies=len(by_study), objects=len(queued))
    return queued
