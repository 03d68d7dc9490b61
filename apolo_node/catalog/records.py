"""What the receiver writes and what people list: instances, studies, study-stable detection.

One short transaction per instance: the study and series rows are found or made, the instance
row inserted, the study's count and time moved on, all or nothing. A study that was queued (or
further) and gets a new instance re-opens: its pending job is cancelled and it waits to be
stable again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from dataclasses import dataclass

from sqlalchemy import Engine, and_, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from apolo_node.catalog.jobs import pending_job
from apolo_node.catalog.models import Instance, Job, JobState, Series, Study, StudyStatus, utcnow

DEIDENTIFY = "deidentify"


@dataclass(frozen=True)
class InstanceRecord:
    """One received instance, every UID already a pseudonym."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str | None
    path: str
    size: int
    calling_aet: str | None = None


def instance_exists(engine: Engine, sop_instance_uid: str) -> bool:
    with engine.connect() as conn:
        row = conn.execute(
            select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid)
        ).first()
        conn.rollback()
    return row is not None


def record_instance(
    engine: Engine,
    rec: InstanceRecord,
    now: dt.datetime | None = None,
    before_commit: Callable[[], object] | None = None,
) -> bool:
    """Catalogue one instance; True if new, False if that SOP Instance UID was already there.

    ``before_commit`` runs inside the transaction, once the instance is known to be new and its
    rows are written but not yet committed (the receiver puts the file in place there, so a
    committed row never lacks its file); if it raises, nothing is written.
    """
    for attempt in range(3):
        try:
            return _record_once(engine, rec, now or utcnow(), before_commit)
        except IntegrityError:
            # A concurrent writer made the study/series row, or the same instance, first.
            if instance_exists(engine, rec.sop_instance_uid):
                return False
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# Built once: the receiver runs these for every instance, and building them costs more than
# the SQLite statements themselves.
_FIND_INSTANCE = select(Instance.id).where(Instance.sop_instance_uid == bindparam("sop"))
_FIND_STUDY = select(Study.id, Study.status).where(Study.study_uid == bindparam("uid"))
_FIND_SERIES = select(Series.id).where(Series.series_uid == bindparam("uid"))
_NEW_STUDY = insert(Study).returning(Study.id)
_NEW_SERIES = insert(Series).returning(Series.id)
_NEW_INSTANCE = insert(Instance)
_TOUCH_STUDY = (
    update(Study)
    .where(Study.id == bindparam("sid"))
    .values(
        instances=Study.instances + 1,
        last_received_at=bindparam("now"),
        updated_at=bindparam("now"),
        status=StudyStatus.RECEIVING.value,
        reason=None,
    )
)


def _record_once(
    engine: Engine,
    rec: InstanceRecord,
    now: dt.datetime,
    before_commit: Callable[[], object] | None,
) -> bool:
    with engine.begin() as conn:
        if conn.execute(_FIND_INSTANCE, {"sop": rec.sop_instance_uid}).first():
            return False
        study = conn.execute(_FIND_STUDY, {"uid": rec.study_uid}).first()
        if study is None:
            study_id = conn.execute(
                _NEW_STUDY,
                {
                    "study_uid": rec.study_uid,
                    "status": StudyStatus.RECEIVING.value,
                    "instances": 0,
                    "received_at": now,
                    "last_received_at": now,
                    "updated_at": now,
                },
            ).scalar_one()
            status = StudyStatus.RECEIVING.value
        else:
            study_id, status = study
        series_id = conn.execute(_FIND_SERIES, {"uid": rec.series_uid}).scalar()
        if series_id is None:
            series_id = conn.execute(
                _NEW_SERIES,
                {"study_id": study_id, "series_uid": rec.series_uid, "modality": rec.modality},
            ).scalar_one()
        conn.execute(
            _NEW_INSTANCE,
            {
                "study_id": study_id,
                "series_id": series_id,
                "sop_instance_uid": rec.sop_instance_uid,
                "sop_class_uid": rec.sop_class_uid,
                "transfer_syntax_uid": rec.transfer_syntax_uid,
                "path": rec.path,
                "size": rec.size,
                "calling_aet": rec.calling_aet,
                "received_at": now,
            },
        )
        conn.execute(_TOUCH_STUDY, {"sid": study_id, "now": now})
        if status != StudyStatus.RECEIVING.value:
            conn.execute(
                update(Job)
                .where(and_(Job.study_id == study_id, Job.state == JobState.PENDING.value))
                .values(state=JobState.CANCELLED.value, error="study re-opened", updated_at=now)
            )
        if before_commit is not None:
            before_commit()
    return True


def queue_stable_studies(
    engine: Engine,
    stable_after: float,
    now: dt.datetime | None = None,
    kind: str = DEIDENTIFY,
    only: Collection[str] | None = None,
) -> list[str]:
    """Studies quiet for ``stable_after`` seconds become ``queued`` with a job; their UIDs.

    ``only`` limits this to some studies (``ingest`` queues what it fed at once).
    """
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=stable_after)
    queued: list[str] = []
    with engine.begin() as conn:
        query = select(Study.id, Study.study_uid).where(
            and_(Study.status == StudyStatus.RECEIVING.value, Study.last_received_at <= cutoff)
        )
        if only is not None:
            query = query.where(Study.study_uid.in_(list(only)))
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        for study_id, study_uid in conn.execute(query).all():
            moved = conn.execute(
                update(Study)
                .where(and_(Study.id == study_id, Study.status == StudyStatus.RECEIVING.value))
                .values(status=StudyStatus.QUEUED.value, updated_at=now)
            ).rowcount
            if moved:
                conn.execute(pending_job(kind, study_id, now))
                queued.append(study_uid)
    return queued


@dataclass(frozen=True)
class StudySummary:
    """A row of ``apolo-node studies``: pseudonymous UID, status, counts, times."""

    study_uid: str
    status: str
    reason: str | None
    instances: int
    series: int
    modalities: list[str]
    received_at: dt.datetime
    last_received_at: dt.datetime

    def as_json(self) -> dict[str, object]:
        return {
            "study_uid": self.study_uid,
            "status": self.status,
            "reason": self.reason,
            "instances": self.instances,
            "series": self.series,
            "modalities": self.modalities,
            "received_at": self.received_at.isoformat(),
            "last_received_at": self.last_received_at.isoformat(),
        }


def list_studies(engine: Engine, status: str | None = None, limit: int | None = None) -> list[StudySummary]:
    """Studies, newest first, with their series counts and modalities."""
    series_q = (
        select(Series.study_id, func.count(Series.id).label("n"))
        .group_by(Series.study_id)
        .subquery()
    )
    q = (
        select(
            Study.id, Study.study_uid, Study.status, Study.reason, Study.instances,
            Study.received_at, Study.last_received_at, func.coalesce(series_q.c.n, 0),
        )
        .outerjoin(series_q, series_q.c.study_id == Study.id)
        .order_by(Study.received_at.desc(), Study.id.desc())
    )
    if status:
        q = q.where(Study.status == status)
    if limit:
        q = q.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
        mods: dict[int, set[str]] = {}
        ids = [r[0] for r in rows]
        if ids:
            for sid, mod in conn.execute(
                select(Series.study_id, Series.modality).where(Series.study_id.in_(ids))
            ):
                if mod:
                    mods.setdefault(sid, set()).add(mod)
        conn.rollback()
    out = []
    for sid, uid, st, reason, n_inst, rec_at, last_at, n_series in rows:
        out.append(
            StudySummary(uid, st, reason, n_inst, n_series, sorted(mods.get(sid, ())), rec_at, last_at)
        )
    return out
