"""Catalog records of the vision stage: a study's TID 1500 SR, its narrative, one row per finding.

Describing a study again (a late instance re-opened it, or another model) replaces its report
and its findings in one transaction. The study moves to ``reported`` only from
``deidentified``: a study re-opened while it was being described stays where it is.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from apolo_node.catalog.models import FindingRow, Outbox, OutboxState, Report, Study, StudyStatus, utcnow
from apolo_node.findings import Algorithm, Box, Code, Finding, Measurement

if TYPE_CHECKING:  # search imports this module (its rows are read as findings here)
    from apolo_node.catalog.search import Filters, FindingHit

DESCRIBE = "describe"
REPORT_SR = "report_sr"  # outbox kind of a study's TID 1500 SR
NARRATIVE_STUDIES_MAX = 10  # studies whose narrative matched a question, at most, whose findings join
NARRATIVE_TERMS_MAX = 24
NARRATIVE_SCAN_MAX = 20_000  # newest reports whose narrative a question scans (all of one --study's)
NARRATIVE_WEIGHT = 0.5  # a narrative hit's relevance against the weakest finding text hit
# How sr.narrative heads a templated impression (a test holds the two equal): left out of the
# narrative search, so that its words do not make every templated report match.
TEMPLATED_NOTE = "non-diagnostic automated summary, not reviewed by a radiologist"


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


def _narrative_columns(record: ReportRecord) -> dict[str, str]:
    """The narrative columns a report fills (none are named when it has no narrative)."""
    values = {"narrative_findings": record.narrative_findings, "impression": record.impression, "trace": record.trace}
    return {k: v for k, v in values.items() if v}


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
                **_narrative_columns(record),
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


def _holds(text: str, term: str) -> bool:
    """``term`` is in ``text`` as a word (letters and digits), or anywhere for other scripts."""
    if re.fullmatch(r"[a-z0-9]+", term):
        return re.search(rf"(?<![a-z0-9]){term}(?![a-z0-9])", text) is not None
    return term in text


def narrative_matches(
    engine: Engine, terms: Sequence[str], study_uid: str | None = None, limit: int = NARRATIVE_STUDIES_MAX
) -> list[tuple[str, float]]:
    """Studies whose narrative (findings text or impression) holds any of ``terms``, with the
    share of the terms it holds, most first (newest report first among equals), at most ``limit``.

    A plain substring scan of the report rows (one per study), confirmed word by word here, so it
    needs no full-text index and works alike on SQLite and PostgreSQL; its time grows with the
    rows, so it reads the newest ``NARRATIVE_SCAN_MAX`` reports only (about 0.3-0.7 s on SQLite,
    measured with 400-character narratives) unless ``study_uid`` names one.
    """
    wanted = [t.lower() for t in dict.fromkeys(terms) if isinstance(t, str) and t.strip()][:NARRATIVE_TERMS_MAX]
    if not wanted or limit < 1:
        return []
    text = func.replace(
        func.lower(func.coalesce(Report.narrative_findings, "") + " " + func.coalesce(Report.impression, "")),
        TEMPLATED_NOTE, " ",
    )
    stmt = (
        select(Study.study_uid, text)
        .join(Study, Study.id == Report.study_id)
        .where(or_(*(text.contains(t, autoescape=True) for t in wanted)))
        .order_by(Report.created_at.desc(), Report.id.desc())
    )
    if study_uid:
        stmt = stmt.where(Study.study_uid == study_uid.strip())
    else:
        newest = select(Report.id).order_by(Report.id.desc()).limit(NARRATIVE_SCAN_MAX)
        stmt = stmt.where(Report.id.in_(newest))
    with engine.connect() as conn:
        rows = conn.execute(stmt.limit(limit * 5)).all()
        conn.rollback()
    scored = [(uid, sum(_holds(body, t) for t in wanted) / len(wanted)) for uid, body in rows]
    kept = [(uid, share) for uid, share in scored if share > 0]
    return sorted(kept, key=lambda x: -x[1])[:limit]  # stable: newest first among equals


def with_narrative_hits(
    engine: Engine, filters: Filters, terms: Sequence[str], hits: Sequence[FindingHit], limit: int
) -> list[FindingHit]:
    """``hits`` followed by the findings (within ``filters``) of studies whose narrative holds a term.

    What makes a report's words searchable by ``ask``: "cardiomegaly" in an impression brings
    that study's findings as evidence even when no finding's own text says it. They rank after
    every finding text hit (relevance: the lowest text hit's times ``NARRATIVE_WEIGHT``, or 1
    without text hits, times the share of terms the narrative holds); a finding already among
    ``hits`` is not repeated.
    """
    from apolo_node.catalog.search import recent_findings

    matches = narrative_matches(engine, terms, filters.study_uid)
    if not matches or limit < 1:
        return list(hits)
    floor = min((h.relevance or 0.0 for h in hits), default=1.0 / NARRATIVE_WEIGHT) * NARRATIVE_WEIGHT or 1.0
    per = max(1, limit // len(matches))
    seen = {h.finding.tracking_uid for h in hits}
    out = list(hits)
    for study_uid, share in matches:
        for hit in recent_findings(engine, dataclasses.replace(filters, study_uid=study_uid), per):
            if hit.finding.tracking_uid not in seen:
                seen.add(hit.finding.tracking_uid)
                out.append(dataclasses.replace(hit, relevance=floor * share))
    return out
