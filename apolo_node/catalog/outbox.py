"""The outbox: results waiting to go back to the PACS, durable, retried with backoff, sent once.

One row per de-identified result object (its SOP Instance UID is unique, so queuing the same
object twice keeps one row). A row is ``pending`` until the PACS has it (``sent``); a PACS that
is down only pushes ``next_attempt_at`` further out, it never drops a row. ``failed`` is kept for
what retrying cannot fix (the PACS refused that object, or its file or vault entry is
unreadable), with the reason, which never holds PHI.

A claim is a lease without a worker column: it moves ``next_attempt_at`` to the end of the lease,
so no other worker takes the row while it is being sent, and a worker that dies leaves it due
again when the lease runs out. The lease's end is also the claim's token: a worker marks only a
row still carrying its token, so one whose lease was taken over changes nothing (a result sent
twice is harmless: the PACS keeps one instance per SOP Instance UID). On PostgreSQL claims use
``FOR UPDATE SKIP LOCKED``; on SQLite ``BEGIN IMMEDIATE`` serialises them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import Engine, and_, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from apolo_node.catalog.models import (
    Audit,
    Outbox,
    OutboxState,
    Report,
    Study,
    StudyStatus,
    utcnow,
)
from apolo_node.catalog.reports import REPORT_SR

ANSWER_SR = "answer_sr"
GSPS = "gsps"
KINDS = (REPORT_SR, ANSWER_SR, GSPS)
MAX_ERROR = 500  # characters of last_error kept


@dataclass(frozen=True)
class ClaimedOutbox:
    """A due row, held by one worker until ``lease_until`` (also the claim's token)."""

    id: int
    study_id: int
    study_uid: str
    kind: str
    sop_instance_uid: str
    path: str
    attempts: int  # failed attempts before this one
    lease_until: dt.datetime


@dataclass(frozen=True)
class OutboxRow:
    """One row as ``outbox_rows`` shows it (pseudonymous UIDs only)."""

    id: int
    study_uid: str
    kind: str
    sop_instance_uid: str
    path: str
    state: str
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    created_at: dt.datetime
    sent_at: dt.datetime | None


@dataclass(frozen=True)
class Delivered:
    """What ``mark_sent`` did: the row (False: no longer this claim's), and the study."""

    marked: bool
    study_sent: bool


def enqueue(
    engine: Engine, study_uid: str, kind: str, sop_instance_uid: str, path: str,
    now: dt.datetime | None = None,
) -> bool:
    """Queue a de-identified result for sending; False if that SOP Instance UID is queued already."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"path must be relative to the spool root, got {path!r}")
    now = now or utcnow()
    dialect_insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    with engine.begin() as conn:
        study_id = conn.execute(select(Study.id).where(Study.study_uid == study_uid)).scalar()
        if study_id is None:
            raise LookupError(f"study {study_uid} is not in the catalog")
        added = conn.execute(
            dialect_insert(Outbox)
            .values(
                study_id=study_id, kind=kind, sop_instance_uid=sop_instance_uid, path=path,
                state=OutboxState.PENDING.value, attempts=0, next_attempt_at=now, created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
            .returning(Outbox.id)  # rowcount is not reliable here on every driver
        ).first()
    return added is not None


def claim_due(
    engine: Engine, worker: str, now: dt.datetime | None = None, lease: float = 300.0
) -> ClaimedOutbox | None:
    """Take the pending row due longest ago (``next_attempt_at <= now``), or None.

    The table has no worker column, so ``worker`` is not stored: the lease's end, returned as
    ``lease_until``, is what marks the row as this claim's.
    """
    now = now or utcnow()
    with engine.begin() as conn:
        query = (
            select(
                Outbox.id, Outbox.study_id, Study.study_uid, Outbox.kind,
                Outbox.sop_instance_uid, Outbox.path, Outbox.attempts,
            )
            .join(Study, Study.id == Outbox.study_id)
            .where(and_(Outbox.state == OutboxState.PENDING.value, Outbox.next_attempt_at <= now))
            .order_by(Outbox.next_attempt_at, Outbox.id)
            .limit(1)
        )
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Outbox)
        row = conn.execute(query).first()
        if row is None:
            return None
        lease_until = now + dt.timedelta(seconds=lease)
        conn.execute(update(Outbox).where(Outbox.id == row.id).values(next_attempt_at=lease_until))
    return ClaimedOutbox(
        row.id, row.study_id, row.study_uid, row.kind, row.sop_instance_uid, row.path,
        row.attempts, lease_until,
    )


def _pending(id: int, lease_until: dt.datetime | None):  # type: ignore[no-untyped-def]
    where = [Outbox.id == id, Outbox.state == OutboxState.PENDING.value]
    if lease_until is not None:
        where.append(Outbox.next_attempt_at == lease_until)
    return and_(*where)


def mark_sent(
    engine: Engine, id: int, *, lease_until: dt.datetime | None = None, worker: str = "",
    now: dt.datetime | None = None,
) -> Delivered:
    """The PACS has the row's object: mark it sent, audit it, and settle the study.

    The study becomes ``sent`` (only from ``reported``) once every outbox row of it is sent.
    ``lease_until``: the claim's token; without it any pending row is marked.
    """
    now = now or utcnow()
    with engine.begin() as conn:
        found = conn.execute(
            select(Outbox.study_id, Outbox.kind, Outbox.sop_instance_uid, Study.study_uid)
            .join(Study, Study.id == Outbox.study_id)
            .where(Outbox.id == id)
        ).first()
        if found is None:
            return Delivered(False, False)
        if engine.dialect.name == "postgresql":
            # Two workers marking a study's last two rows at once must not both see the other's
            # row still pending: the study row is the lock that orders them.
            conn.execute(select(Study.id).where(Study.id == found.study_id).with_for_update())
        marked = conn.execute(
            update(Outbox).where(_pending(id, lease_until)).values(
                state=OutboxState.SENT.value, sent_at=now
            )
        ).rowcount
        if not marked:
            return Delivered(False, False)
        conn.execute(
            insert(Audit).values(
                at=now, actor=(worker or "apolo-node")[:128], action="send",
                detail=f"{found.kind} {found.sop_instance_uid}", answer_id=None,
                studies=json.dumps([found.study_uid]),
            )
        )
        unsent = conn.execute(
            select(func.count()).select_from(Outbox).where(and_(
                Outbox.study_id == found.study_id, Outbox.state != OutboxState.SENT.value
            ))
        ).scalar_one()
        moved = 0
        if unsent == 0:
            moved = conn.execute(
                update(Study)
                .where(and_(Study.id == found.study_id, Study.status == StudyStatus.REPORTED.value))
                .values(status=StudyStatus.SENT.value, updated_at=now)
            ).rowcount
    return Delivered(True, bool(moved))


def mark_retry(
    engine: Engine, id: int, error: str, next_attempt_at: dt.datetime, *,
    lease_until: dt.datetime | None = None,
) -> bool:
    """Count a failed attempt and wait until ``next_attempt_at``; ``error`` must hold no PHI."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                update(Outbox).where(_pending(id, lease_until)).values(
                    attempts=Outbox.attempts + 1, last_error=error[:MAX_ERROR],
                    next_attempt_at=next_attempt_at,
                )
            ).rowcount
        )


def mark_failed(
    engine: Engine, id: int, reason: str, *, lease_until: dt.datetime | None = None
) -> bool:
    """Give up on a row that retrying cannot fix, keeping ``reason`` (no PHI)."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                update(Outbox).where(_pending(id, lease_until)).values(
                    state=OutboxState.FAILED.value, attempts=Outbox.attempts + 1,
                    last_error=reason[:MAX_ERROR],
                )
            ).rowcount
        )


def outbox_rows(
    engine: Engine, study_uid: str | None = None, newest: int | None = None
) -> list[OutboxRow]:
    """Every outbox row (of one study), oldest first: for tests and the command line.
    With ``newest``, only that many of the newest rows, newest first (the status page)."""
    query = (
        select(
            Outbox.id, Study.study_uid, Outbox.kind, Outbox.sop_instance_uid, Outbox.path,
            Outbox.state, Outbox.attempts, Outbox.next_attempt_at, Outbox.last_error,
            Outbox.created_at, Outbox.sent_at,
        )
        .join(Study, Study.id == Outbox.study_id)
    )
    query = query.order_by(Outbox.id) if newest is None else query.order_by(Outbox.id.desc()).limit(newest)
    if study_uid is not None:
        query = query.where(Study.study_uid == study_uid)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        conn.rollback()
    return [OutboxRow(*row) for row in rows]


def own_objects(engine: Engine, study_uid: str) -> set[str]:
    """SOP Instance and Series UIDs of the study's objects of ours (its report, its queued results).

    They are sent with the UIDs they have, so a result that cites one (an answer SR citing the
    TID 1500 SR) refers to it as it is: re-linking keeps these UIDs.
    """
    with engine.connect() as conn:
        queued = conn.execute(
            select(Outbox.sop_instance_uid).join(Study, Study.id == Outbox.study_id)
            .where(Study.study_uid == study_uid)
        ).scalars().all()
        reports = conn.execute(
            select(Report.sop_instance_uid, Report.series_uid).join(Study, Study.id == Report.study_id)
            .where(Study.study_uid == study_uid)
        ).all()
        conn.rollback()
    return {*queued, *(uid for row in reports for uid in row)}
