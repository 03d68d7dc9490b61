"""Catalog records of the vision stage: a study's TID 1500 SR, its narrative, one row per finding.

Describing a study again (a late instance re-opened it, or another model) replaces its report
and its findings in one transaction. The study moves to ``reported`` only from
``deidentified``: a study re-opened while it was being described stays where it is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, and_, delete, insert, select, update
from sqlalchemy.orm import Session

from apolo_node.catalog.models import FindingRow, Outbox, OutboxState, Report, Study, StudyStatus, utcnow
from apolo_node.findings import Algorithm, Box, Code, Finding, Measurement

DESCRIBE = "describe"
REPORT_SR = "report_sr"  # outbox kind of a study's TID 1500 SR


@dataclass(frozen=True)
class ReportRecord:
    """The SR file of a study's findings: its UIDs and spool-relative path, how it was made, and
    the narrative it holds (findings text, impression, reasoning trace; "" where it has none)."""

    study_uid: str
    sop_instance_uid: str
    series_uid: str
    path: str
    algorithm: Algorithm
    images: int
    unparsed: int
    narrative_findings: str = ""
    impression: str = ""
    trace: str = ""


@dataclass(frozen=True)
class StoredReport:
    """What ``apolo-node report STUDY`` shows."""

    record: ReportRecord
    findings: list[Finding]

    def as_json(self) -> dict[str, object]:
        """The shape of ``report --json`` (design.md): study_uid, sr_path, narrative, findings, and more."""
        r = self.record
        return {
            "study_uid": r.study_uid,
            "sr_path": r.path,
            "sr_sop_instance_uid": r.sop_instance_uid,
            "algorithm": {"name": r.algorithm.name, "version": r.algorithm.version},
            "images": r.images,
            "unparsed": r.unparsed,
            "narrative": {"findings": r.narrative_findings, "impression": r.impression, "trace": r.trace},
            "findings": [f.as_json() for f in self.findings],
        }


def _row(study_id: int, report_id: int, f: Finding, model: str) -> dict[str, object]:
    box = f.box.as_list() if f.box else [None] * 4
    return {
        "report_id": report_id,
        "study_id": study_id,
        "tracking_uid": f.tracking_uid,
        "sop_instance_uid": f.sop_instance_uid,
        "sop_class_uid": f.sop_class_uid,
        "frame": f.frame,
        "label": f.label[:64],
        "code_value": f.code.value,
        "code_scheme": f.code.scheme,
        "code_meaning": f.code.meaning,
        "description": f.description,
        "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
        "confidence": f.confidence,
        "laterality": f.laterality,
        "location": (f.location or None) and f.location[:64],
        "measurements": json.dumps([
            {"name": [m.name.value, m.name.scheme, m.name.meaning], "value": m.value,
             "unit": [m.unit.value, m.unit.scheme, m.unit.meaning]}
            for m in f.measurements
        ]),
        "model": model,
    }


def record_report(
    engine: Engine, record: ReportRecord, findings: Sequence[Finding], send: bool = False
) -> bool:
    """Store (or replace) the study's report and findings; True if the study became ``reported``.

    With ``send`` the SR is queued in the outbox in the same transaction (a crash cannot leave a
    report that is never sent); a replaced report's unsent SR leaves the outbox with it.
    """
    now = utcnow()
    with engine.begin() as conn:
        study_id = conn.execute(select(Study.id).where(Study.study_uid == record.study_uid)).scalar()
        if study_id is None:
            raise LookupError(f"study {record.study_uid} is not in the catalog")
        old = conn.execute(select(Report.id).where(Report.study_id == study_id)).scalar()
        if old is not None:
            old_sop = conn.execute(select(Report.sop_instance_uid).where(Report.id == old)).scalar_one()
            conn.execute(delete(FindingRow).where(FindingRow.report_id == old))
            conn.execute(delete(Report).where(Report.id == old))
            conn.execute(delete(Outbox).where(and_(
                Outbox.sop_instance_uid == old_sop, Outbox.state == OutboxState.PENDING.value
            )))
        report_id = conn.execute(
            insert(Report).returning(Report.id),
            {
                "study_id": study_id,
                "sop_instance_uid": record.sop_instance_uid,
                "series_uid": record.series_uid,
                "path": record.path,
                "algorithm": record.algorithm.name,
                "algorithm_version": record.algorithm.version,
                "images": record.images,
                "unparsed": record.unparsed,
                "created_at": now,
                "narrative_findings": record.narrative_findings or None,
                "impression": record.impression or None,
                "trace": record.trace or None,
            },
        ).scalar_one()
        if findings:
            conn.execute(
                insert(FindingRow), [_row(study_id, report_id, f, record.algorithm.name) for f in findings]
            )
        if send:
            conn.execute(insert(Outbox).values(
                study_id=study_id, kind=REPORT_SR, sop_instance_uid=record.sop_instance_uid,
                path=record.path, state=OutboxState.PENDING.value, attempts=0,
                next_attempt_at=now, created_at=now,
            ))
        moved = conn.execute(
            update(Study)
            .where(and_(Study.id == study_id, Study.status == StudyStatus.DEIDENTIFIED.value))
            .values(status=StudyStatus.REPORTED.value, updated_at=now)
        ).rowcount
    return bool(moved)


def _finding(row: FindingRow) -> Finding:
    box = None if row.x1 is None else Box(row.x1, row.y1, row.x2, row.y2)  # type: ignore[arg-type]
    measurements = tuple(
        Measurement(Code(*m["name"]), float(m["value"]), Code(*m["unit"]))
        for m in json.loads(row.measurements or "[]")
    )
    return Finding(
        tracking_uid=row.tracking_uid, label=row.label,
        code=Code(row.code_value, row.code_scheme, row.code_meaning),
        sop_instance_uid=row.sop_instance_uid, sop_class_uid=row.sop_class_uid, frame=row.frame,
        description=row.description, box=box, confidence=row.confidence,
        laterality=row.laterality, location=row.location, measurements=measurements,
    )


def report_path(engine: Engine, study_uid: str) -> str | None:
    """The spool-relative SR file of the study's report, or None: without reading its findings."""
    with engine.connect() as conn:
        path = conn.execute(
            select(Report.path).join(Study, Study.id == Report.study_id).where(Study.study_uid == study_uid)
        ).scalar()
        conn.rollback()
    return path


def report_for(engine: Engine, study_uid: str) -> StoredReport | None:
    """The study's report and findings (in the order they were stored), or None if it has none."""
    with Session(engine) as session:
        report = session.scalars(
            select(Report).join(Study, Study.id == Report.study_id).where(Study.study_uid == study_uid)
        ).first()
        if report is None:
            return None
        rows = session.scalars(
            select(FindingRow).where(FindingRow.report_id == report.id).order_by(FindingRow.id)
        ).all()
        findings = [_finding(r) for r in rows]
    record = ReportRecord(
        study_uid, report.sop_instance_uid, report.series_uid, report.path,
        Algorithm(report.algorithm, report.algorithm_version), report.images, report.unparsed,
        report.narrative_findings or "", report.impression or "", report.trace or "",
    )
    return StoredReport(record, findings)
