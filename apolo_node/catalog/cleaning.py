"""Catalog records of the de-identification stage: which instances wait, which are clean or
quarantined (with a reason that holds no PHI), and the study's resulting status."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, and_, func, select, update

from apolo_node.catalog.jobs import pending_job
from apolo_node.catalog.models import Instance, InstanceState, Job, JobState, Series, Study, StudyStatus, utcnow
from apolo_node.catalog.records import DEIDENTIFY
from apolo_node.catalog.reports import DESCRIBE


@dataclass(frozen=True)
class PendingInstance:
    """A spooled instance still to be cleaned (pseudonymous UID, spool-relative path)."""

    id: int
    sop_instance_uid: str
    path: str


def pending_instances(engine: Engine, study_id: int) -> list[PendingInstance]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Instance.id, Instance.sop_instance_uid, Instance.path)
            .where(and_(Instance.study_id == study_id, Instance.state == InstanceState.RECEIVED.value))
            .order_by(Instance.id)
        ).all()
        conn.rollback()
    return [PendingInstance(*r) for r in rows]


def mark_clean(
    engine: Engine, instance_id: int, clean_path: str,
    study_date: dt.date | None = None, body_part: str | None = None,
) -> None:
    """Record the clean file; keep the de-identified (shifted) Study Date and the Body Part
    Examined it carries, for the clinicians' filters."""
    with engine.begin() as conn:
        conn.execute(
            update(Instance).where(Instance.id == instance_id).values(
                state=InstanceState.CLEAN.value, clean_path=clean_path, reason=None
            )
        )
        ids = conn.execute(
            select(Instance.study_id, Instance.series_id).where(Instance.id == instance_id)
        ).first()
        if ids is None:
            return
        if study_date is not None:
            conn.execute(update(Study).where(Study.id == ids[0]).values(study_date=study_date))
        if body_part:
            conn.execute(update(Series).where(Series.id == ids[1]).values(body_part=body_part[:64]))


def mark_quarantined(engine: Engine, instance_id: int, path: str, reason: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Instance).where(Instance.id == instance_id).values(
                state=InstanceState.QUARANTINED.value, path=path, reason=reason,
                quarantined_at=utcnow(),
            )
        )


def instance_states(engine: Engine, study_id: int) -> dict[str, int]:
    """Count of the study's instances in each state."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Instance.state, func.count(Instance.id))
            .where(Instance.study_id == study_id)
            .group_by(Instance.state)
        ).all()
        conn.rollback()
    return {state: n for state, n in rows}


def settle_study(engine: Engine, study_id: int) -> str | None:
    """Set a queued study to ``deidentified`` (queueing its ``describe`` job in the same
    transaction) or ``quarantined``, from its instances' states.

    A study re-opened meanwhile (a late instance made it ``receiving``) is left as it is, and
    None is returned; otherwise the new status. So is a study that still has instances waiting
    (they came, or were released, after this job listed its instances, and the study was queued
    again meanwhile): it stays ``queued`` with a pending ``deidentify`` job, which settles it once
    they are clean, so no study is reported before every instance is de-identified.
    """
    counts = instance_states(engine, study_id)
    if counts.get(InstanceState.RECEIVED.value, 0):
        _queue_again(engine, study_id)
        return None
    clean = counts.get(InstanceState.CLEAN.value, 0)
    bad = counts.get(InstanceState.QUARANTINED.value, 0)
    total = sum(counts.values())
    if clean:
        status = StudyStatus.DEIDENTIFIED.value
        reason = f"{bad} of {total} instances quarantined" if bad else None
    else:
        status = StudyStatus.QUARANTINED.value
        reason = f"all {total} instances quarantined"
    now = utcnow()
    with engine.begin() as conn:
        moved = conn.execute(
            update(Study)
            .where(and_(Study.id == study_id, Study.status == StudyStatus.QUEUED.value))
            .values(status=status, reason=reason, updated_at=now)
        ).rowcount
        if moved and status == StudyStatus.DEIDENTIFIED.value:  # the vision stage's turn
            conn.execute(pending_job(DESCRIBE, study_id, now))
    return status if moved else None


def _queue_again(engine: Engine, study_id: int) -> None:
    """A pending ``deidentify`` job for a queued study that has none (another may be running)."""
    now = utcnow()
    with engine.begin() as conn:
        queued = conn.execute(
            select(Study.id).where(and_(Study.id == study_id, Study.status == StudyStatus.QUEUED.value))
        ).first()
        pending = conn.execute(
            select(Job.id).where(and_(
                Job.study_id == study_id, Job.kind == DEIDENTIFY, Job.state == JobState.PENDING.value
            ))
        ).first()
        if queued and not pending:
            conn.execute(pending_job(DEIDENTIFY, study_id, now))


def fail_study(
    engine: Engine, study_id: int, reason: str, from_status: StudyStatus = StudyStatus.QUEUED
) -> None:
    """Mark the study failed, unless it has moved on from ``from_status`` (re-opened meanwhile)."""
    with engine.begin() as conn:
        conn.execute(
            update(Study)
            .where(and_(Study.id == study_id, Study.status == from_status.value))
            .values(status=StudyStatus.FAILED.value, reason=reason, updated_at=utcnow())
        )
