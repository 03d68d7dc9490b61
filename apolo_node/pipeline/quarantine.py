"""The operator's quarantine: put an instance aside encrypted, release it after review, purge it.

``quarantine list|show|release|purge`` and the de-identification worker call these. A release
never bypasses the verifier: the original goes back to ``incoming/`` and through the same
de-identification and the same check (after a fix of the profile, the options or the software,
say); if it still cannot be cleaned, it comes back here. Every release and purge is audited with
the operating-system user and the pseudonymous UIDs, never a value. ``serve`` purges what has
waited longer than ``[deid] quarantine_days``.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from sqlalchemy import Engine

from apolo_node.catalog.answers import record_audit
from apolo_node.catalog.cleaning import mark_quarantined
from apolo_node.catalog.models import InstanceState, utcnow
from apolo_node.catalog.quarantine import (
    QuarantinedInstance,
    list_quarantined,
    mark_purged,
    mark_released,
    quarantined_instance,
)
from apolo_node.config import Config
from apolo_node.deid.quarantine import Quarantine, QuarantineError
from apolo_node.logs import event, get_logger
from apolo_node.spool import Spool

log = get_logger("quarantine")
RETENTION_CHECK_EVERY = 3600.0  # seconds between two harvests of expired originals by serve


class NotQuarantined(LookupError):
    """The instance named is unknown, or is not (or no longer) quarantined."""


@dataclass(frozen=True)
class Purged:
    """What one purge did: the pseudonymous SOP Instance UIDs whose originals are gone."""

    sop_instance_uids: list[str]


def quarantine_instance(
    engine: Engine, spool: Spool, quarantine: Quarantine,
    instance_id: int, study_uid: str, sop_instance_uid: str, incoming_path: str, reason: str,
) -> str:
    """Encrypt the spooled original into the quarantine, record why, delete the clear copy.

    In that order: a crash leaves at worst an encrypted copy beside the clear one, never neither.
    """
    relative = quarantine.keep(study_uid, sop_instance_uid, spool.root / incoming_path)
    mark_quarantined(engine, instance_id, relative, reason)
    spool.remove(incoming_path)
    return relative


def find(engine: Engine, sop_instance_uid: str) -> QuarantinedInstance:
    row = quarantined_instance(engine, sop_instance_uid)
    if row is None:
        raise NotQuarantined(f"instance {sop_instance_uid} is not in the catalog")
    if row.state != InstanceState.QUARANTINED.value:
        raise NotQuarantined(f"instance {sop_instance_uid} is {row.state}, not quarantined")
    return row


def release(
    engine: Engine, spool: Spool, quarantine: Quarantine, sop_instance_uid: str, actor: str
) -> QuarantinedInstance:
    """Put a quarantined original back before de-identification; audited."""
    row = find(engine, sop_instance_uid)
    incoming = spool.relative_path(row.study_uid, row.sop_instance_uid)
    staging = spool.open_staging()
    try:
        for chunk in quarantine.chunks(row.path):
            staging.write(chunk)
        spool.place(staging.finish(), incoming)
    except BaseException:
        staging.discard()
        raise
    if not mark_released(engine, row.id, incoming):  # released or purged meanwhile
        spool.remove(incoming)
        raise NotQuarantined(f"instance {sop_instance_uid} is no longer quarantined")
    quarantine.remove(row.path)
    record_audit(
        engine, actor=actor, action="release", detail=f"instance {row.sop_instance_uid}",
        studies=[row.study_uid],
    )
    event(log, "quarantine.released", study_uid=row.study_uid, sop_instance_uid=row.sop_instance_uid)
    return row


def purge(
    engine: Engine, quarantine: Quarantine, rows: list[QuarantinedInstance], actor: str, why: str
) -> Purged:
    """Delete the encrypted originals of ``rows``; the rows stay, ``purged``; audited."""
    done: list[str] = []
    for row in rows:
        if row.path:
            quarantine.remove(row.path)
        if mark_purged(engine, row.id):
            done.append(row.sop_instance_uid)
    if done:
        record_audit(
            engine, actor=actor, action="purge", detail=f"{len(done)} instances ({why})",
            studies=sorted({r.study_uid for r in rows if r.sop_instance_uid in done}),
        )
        event(log, "quarantine.purged", instances=len(done), why=why)
    return Purged(done)


def expired(engine: Engine, days: float, now: dt.datetime | None = None) -> list[QuarantinedInstance]:
    """Quarantined instances older than the retention period."""
    return list_quarantined(engine, before=(now or utcnow()) - dt.timedelta(days=days))


def watch_retention(
    cfg: Config, engine: Engine, quarantine: Quarantine, stop: threading.Event,
    every: float = RETENTION_CHECK_EVERY,
) -> None:
    """``serve``'s harvest: purge what waited longer than ``[deid] quarantine_days``."""
    while not stop.is_set():
        try:
            rows = expired(engine, cfg.deid.quarantine_days)
            if rows:
                purge(engine, quarantine, rows, actor="apolo-node serve", why="retention period")
        except (QuarantineError, OSError) as exc:
            event(log, "quarantine.retention_failed", 40, error=type(exc).__name__)
        stop.wait(every)
