"""The durable job queue between stages: claim with a lease, heartbeat, finish or fail.

A worker that dies stops heartbeating; once its lease runs out the job is claimed again. On
PostgreSQL the claim uses ``FOR UPDATE SKIP LOCKED`` so several nodes share one queue; on SQLite
``BEGIN IMMEDIATE`` serialises claims (processes of one machine). Every change checks the job is
still the caller's, so a worker whose lease was taken over cannot finish someone else's claim.

Of a study's jobs of one kind, only the oldest unfinished one can be claimed: a study queued
again while its job runs (late instances) waits for that job, so two workers never clean or
describe one study at once (with one process this held by itself; with several it must be said).
It holds on PostgreSQL without locking the study: the older job stays pending or claimed, in
every snapshot, until it is done.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, Insert, and_, exists, insert, or_, select, update
from sqlalchemy.orm import aliased

from apolo_node.catalog.models import Job, JobState, Study, StudyStatus, utcnow


def pending_job(kind: str, study_id: int, now: dt.datetime) -> Insert:
    """The statement that queues a new pending job of ``kind`` for a study; the caller runs it
    in the transaction that moves the study, so a status and its job change together."""
    return insert(Job).values(
        kind=kind, study_id=study_id, state=JobState.PENDING.value,
        attempts=0, created_at=now, updated_at=now,
    )


@dataclass(frozen=True)
class ClaimedJob:
    """A job now held by one worker until ``lease_until``."""

    id: int
    kind: str
    study_id: int
    study_uid: str
    attempts: int
    lease_until: dt.datetime


def claim(
    engine: Engine,
    kind: str,
    worker: str,
    lease: float,
    now: dt.datetime | None = None,
    max_attempts: int = 5,
) -> ClaimedJob | None:
    """Take the oldest pending job of ``kind`` (or one whose lease ran out), or None.

    The lease is counted from the moment of the claim, not from ``now`` (a process that waited
    for the CPU or the lock between the two would otherwise take a job whose lease already ran
    out, for another worker to take again); ``now`` given explicitly (tests) counts as that moment.
    """
    fixed = now is not None
    now = now or utcnow()
    earlier = aliased(Job)
    unfinished = (JobState.PENDING.value, JobState.CLAIMED.value)
    with engine.begin() as conn:
        query = (
            select(Job.id, Job.study_id, Job.attempts, Study.study_uid)
            .join(Study, Study.id == Job.study_id)
            .where(
                and_(
                    Job.kind == kind,
                    or_(
                        Job.state == JobState.PENDING.value,
                        and_(Job.state == JobState.CLAIMED.value, Job.lease_until < now),
                    ),
                    ~exists().where(and_(  # one job of a kind per study at a time, oldest first
                        earlier.study_id == Job.study_id, earlier.kind == Job.kind,
                        earlier.state.in_(unfinished), earlier.id < Job.id,
                    )),
                )
            )
            .order_by(Job.id)
            .limit(1)
        )
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Job)
        row = conn.execute(query).first()
        if row is None:
            return None
        job_id, study_id, attempts, study_uid = row
        if attempts >= max_attempts:
            reason = f"gave up after {attempts} attempts whose workers died or timed out"
            conn.execute(
                update(Job).where(Job.id == job_id).values(
                    state=JobState.FAILED.value, error=reason, updated_at=now, worker=None
                )
            )
            conn.execute(
                update(Study).where(Study.id == study_id).values(
                    status=StudyStatus.FAILED.value, reason=f"{kind}: {reason}", updated_at=now
                )
            )
            return None
        lease_until = (now if fixed else utcnow()) + dt.timedelta(seconds=lease)
        conn.execute(
            update(Job).where(Job.id == job_id).values(
                state=JobState.CLAIMED.value,
                worker=worker,
                lease_until=lease_until,
                attempts=attempts + 1,
                updated_at=now,
            )
        )
    return ClaimedJob(job_id, kind, study_id, study_uid, attempts + 1, lease_until)


def _owned(job: ClaimedJob, worker: str):  # type: ignore[no-untyped-def]
    return and_(Job.id == job.id, Job.worker == worker, Job.state == JobState.CLAIMED.value)


def heartbeat(engine: Engine, job: ClaimedJob, worker: str, lease: float) -> bool:
    """Extend the lease; False if the job is no longer this worker's."""
    with engine.begin() as conn:
        now = utcnow()  # after BEGIN: a wait for the lock does not shorten the lease
        return bool(
            conn.execute(
                update(Job).where(_owned(job, worker)).values(
                    lease_until=now + dt.timedelta(seconds=lease), updated_at=now
                )
            ).rowcount
        )


def renew_claims(engine: Engine, worker_prefix: str, lease: float) -> int:
    """Extend the lease of every job held by workers whose names start with ``worker_prefix``
    (one process's: ``host:pid:``); how many. A process that dies renews nothing, so its jobs
    are taken over once their leases end; one that lives keeps them however long a job takes."""
    with engine.begin() as conn:
        now = utcnow()
        return int(
            conn.execute(
                update(Job)
                .where(and_(
                    Job.state == JobState.CLAIMED.value,
                    Job.worker.startswith(worker_prefix, autoescape=True),
                ))
                .values(lease_until=now + dt.timedelta(seconds=lease), updated_at=now)
            ).rowcount
        )


def finish(engine: Engine, job: ClaimedJob, worker: str) -> bool:
    """Mark the job done; False if it was no longer this worker's."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                update(Job).where(_owned(job, worker)).values(
                    state=JobState.DONE.value, lease_until=None, updated_at=utcnow()
                )
            ).rowcount
        )


def release(engine: Engine, job: ClaimedJob, worker: str) -> bool:
    """Give an unfinished job back to the queue (the node is stopping); not counted as an attempt."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                update(Job).where(_owned(job, worker)).values(
                    state=JobState.PENDING.value, worker=None, lease_until=None,
                    attempts=Job.attempts - 1, updated_at=utcnow(),
                )
            ).rowcount
        )


def fail(engine: Engine, job: ClaimedJob, worker: str, reason: str) -> bool:
    """Mark the job failed with a reason (no PHI in it); False if no longer this worker's."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                update(Job).where(_owned(job, worker)).values(
                    state=JobState.FAILED.value, error=reason, lease_until=None, updated_at=utcnow()
                )
            ).rowcount
        )


def job_states(engine: Engine, study_uid: str) -> list[tuple[str, str]]:
    """(kind, state) of every job of a study, oldest first: for tests and ``studies``."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Job.kind, Job.state)
            .join(Study, Study.id == Job.study_id)
            .where(Study.study_uid == study_uid)
            .order_by(Job.id)
        ).all()
        conn.rollback()
    return [(k, s) for k, s in rows]
