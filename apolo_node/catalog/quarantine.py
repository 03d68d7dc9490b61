"""Catalog records of the quarantine: what waits for an operator, why, since when.

Reasons name the rule and the element path, never a value (the de-identification stage writes
them that way). A release puts the instance back in front of de-identification, with the same
verifier, in one transaction with its study's new job; a purge leaves the row, marked ``purged``,
so the study's counts stay honest and the audit trail has something to point at.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, and_, select, update

from apolo_node.catalog.jobs import pending_job
from apolo_node.catalog.models import (
    Instance,
    InstanceState,
    Series,
    Study,
    StudyStatus,
    utcnow,
)
from apolo_node.catalog.records import DEIDENTIFY


@dataclass(frozen=True)
class QuarantinedInstance:
    """One quarantined (or purged) instance: pseudonymous UIDs, the reason, the encrypted file."""

    id: int
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str | None
    state: str
    reason: str
    path: str
    quarantined_at: dt.datetime | None

    def as_json(self) -> dict[str, object]:
        return {
            "sop_instance_uid": self.sop_instance_uid,
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "sop_class_uid": self.sop_class_uid,
            "modality": self.modality,
            "state": self.state,
            "reason": self.reason,
            "quarantined_at": self.quarantined_at.isoformat() if self.quarantined_at else None,
        }


def _query():  # type: ignore[no-untyped-def]
    return (
        select(
            Instance.id, Study.study_uid, Series.series_uid, Instance.sop_instance_uid,
            Instance.sop_class_uid, Series.modality, Instance.state,
            Instance.reason, Instance.path, Instance.quarantined_at,
        )
        .join(Study, Study.id == Instance.study_id)
        .join(Series, Series.id == Instance.series_id)
    )


def list_quarantined(
    engine: Engine, study_uid: str | None = None, purged: bool = False,
    before: dt.datetime | None = None,
) -> list[QuarantinedInstance]:
    """Quarantined instances, oldest first; with ``purged``, the purged ones too; with
    ``before``, only those quarantined before that time (the retention period's harvest)."""
    states = [InstanceState.QUARANTINED.value] + ([InstanceState.PURGED.value] if purged else [])
    query = _query().where(Instance.state.in_(states))
    if study_uid is not None:
        query = query.where(Study.study_uid == study_uid)
    if before is not None:
        query = query.where(and_(Instance.quarantined_at.is_not(None), Instance.quarantined_at < before))
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(Instance.quarantined_at, Instance.id)).all()
        conn.rollback()
    return [QuarantinedInstance(*r[:7], r[7] or "", *r[8:]) for r in rows]


def quarantined_instance(engine: Engine, sop_instance_uid: str) -> QuarantinedInstance | None:
    """One instance by its pseudonymous SOP Instance UID, whatever its state; None if unknown."""
    with engine.connect() as conn:
        row = conn.execute(_query().where(Instance.sop_instance_uid == sop_instance_uid)).first()
        conn.rollback()
    return None if row is None else QuarantinedInstance(*row[:7], row[7] or "", *row[8:])


def mark_released(engine: Engine, instance_id: int, incoming_path: str) -> bool:
    """The instance waits for de-identification again; its study is queued with a new job
    (unless it is receiving or queued already, when the coming job takes the instance too).
    False if the instance was not quarantined (released or purged meanwhile)."""
    now = utcnow()
    with engine.begin() as conn:
        moved = conn.execute(
            update(Instance)
            .where(and_(Instance.id == instance_id, Instance.state == InstanceState.QUARANTINED.value))
            .values(
                state=InstanceState.RECEIVED.value, path=incoming_path, reason=None, quarantined_at=None
            )
        ).rowcount
        if not moved:
            return False
        study_id = conn.execute(select(Instance.study_id).where(Instance.id == instance_id)).scalar_one()
        requeued = conn.execute(
            update(Study)
            .where(and_(
                Study.id == study_id,
                Study.status.not_in([StudyStatus.RECEIVING.value, StudyStatus.QUEUED.value]),
            ))
            .values(status=StudyStatus.QUEUED.value, reason=None, updated_at=now)
        ).rowcount
        if requeued:
            conn.execute(pending_job(DEIDENTIFY, study_id, now))
    return True


def mark_purged(engine: Engine, instance_id: int) -> bool:
    """The encrypted original is gone; the row stays, ``purged``. False if not quarantined."""
    with engine.begin() as conn:
        return bool(conn.execute(
            update(Instance)
            .where(and_(Instance.id == instance_id, Instance.state == InstanceState.QUARANTINED.value))
            .values(state=InstanceState.PURGED.value, path="")
        ).rowcount)
