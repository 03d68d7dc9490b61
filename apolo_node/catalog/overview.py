"""What the status page and ``/metrics`` read from the catalog: counts by state, and a ping.

Counts, not rows: they are cheap on a large catalog (each is one GROUP BY on an indexed column)
and hold no identifiers at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, func, select, text

from apolo_node.catalog.models import Instance, Job, JobState, Outbox, Study


@dataclass(frozen=True)
class Counts:
    """Rows by state: studies by status, instances by state, jobs by (kind, state), outbox by state."""

    studies: dict[str, int] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)


def counts(engine: Engine) -> Counts:
    """Every count in one read; jobs that are done or cancelled are left out (they only grow)."""
    live = (JobState.PENDING.value, JobState.CLAIMED.value, JobState.FAILED.value)
    with engine.connect() as conn:
        studies = conn.execute(select(Study.status, func.count()).group_by(Study.status)).all()
        instances = conn.execute(select(Instance.state, func.count()).group_by(Instance.state)).all()
        jobs = conn.execute(
            select(Job.kind, Job.state, func.count())
            .where(Job.state.in_(live))
            .group_by(Job.kind, Job.state)
        ).all()
        outbox = conn.execute(select(Outbox.state, func.count()).group_by(Outbox.state)).all()
        conn.rollback()
    return Counts(
        studies={s: n for s, n in studies},
        instances={s: n for s, n in instances},
        jobs={(k, s): n for k, s, n in jobs},
        outbox={s: n for s, n in outbox},
    )


def ping(engine: Engine) -> None:
    """Raise if the catalog cannot answer a trivial query (for ``/readyz``)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1")).scalar_one()
        conn.rollback()
