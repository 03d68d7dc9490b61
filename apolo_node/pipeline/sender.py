"""The send worker: queued results go back to the PACS, re-linked to the original study.

For each due outbox row: the de-identified result (spool-relative file) is read, re-linked
through the vault (``send.relink``), and sent with one C-STORE (``send.scu``). Then the row is

- ``sent`` when the PACS has it; once every row of a study is sent, the study becomes ``sent``
  (from ``reported`` only);
- retried later with growing backoff (``[send] retry_base`` doubling up to ``retry_max``, plus
  jitter) when the PACS is down, busy or answers out of resources: a PACS that is down delays
  delivery, it never drops it;
- ``failed``, with the reason, only when retrying cannot fix it: the PACS refused that object, or
  its file or vault entry cannot be read.

The re-linked object holds PHI: it lives in memory only, and logs and reasons name the
pseudonymous study and the result's own SOP Instance UID, statuses and error kinds, nothing else.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from pydicom import dcmread
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset
from sqlalchemy import Engine

from apolo_node.catalog import outbox
from apolo_node.catalog.models import utcnow
from apolo_node.config import Config
from apolo_node.deid.vault import Vault, VaultError
from apolo_node.logs import event, get_logger
from apolo_node.metrics import STAGE_SECONDS
from apolo_node.pipeline import workers
from apolo_node.pseudonym import UIDMapper
from apolo_node.spool import Spool
from apolo_node.send.relink import RelinkError, relink
from apolo_node.send.retry import retry_delay
from apolo_node.send.scu import StoreResult, c_store

log = get_logger("send")


class ResultUnreadable(RuntimeError):
    """The queued result's file is missing or not DICOM; the message names no value of it."""


def worker_name(n: int = 0) -> str:
    return workers.worker_name("send", n)


def read_result(spool: Spool, path: str) -> Dataset:
    """The de-identified result at spool-relative ``path``."""
    try:
        with disable_value_validation():  # pydicom's warnings quote values
            return dcmread(spool.root / path)
    except Exception as exc:
        raise ResultUnreadable(f"result file unreadable ({type(exc).__name__})") from None


def run_once(
    cfg: Config, engine: Engine, spool: Spool, vault: Vault, mapper: UIDMapper, worker: str
) -> bool:
    """Claim one due outbox row and try to send it; False when none was due."""
    row = outbox.claim_due(engine, worker, utcnow(), cfg.worker.lease)
    if row is None:
        return False
    fields = {"study_uid": row.study_uid, "sop_instance_uid": row.sop_instance_uid, "kind": row.kind}
    try:
        keep = outbox.own_objects(engine, row.study_uid)  # an answer SR cites the report SR
        result = relink(read_result(spool, row.path), vault, mapper, keep=keep)
    except (ResultUnreadable, RelinkError, VaultError) as exc:
        _fail(engine, row, str(exc), fields)
        return True
    except Exception as exc:  # a bug: keep the row and try again later, as for a PACS that is down
        log.exception("outbox.relink_error", extra={"fields": fields})
        _retry(cfg, engine, row, f"re-linking failed ({type(exc).__name__})", fields)
        return True
    with STAGE_SECONDS.labels("send").time():
        outcome = c_store(result, cfg.send)
    del result  # the PHI-bearing copy goes no further
    if outcome.result is StoreResult.SENT:
        done = outbox.mark_sent(engine, row.id, lease_until=row.lease_until, worker=worker)
        event(log, "outbox.sent", status=f"0x{outcome.status:04X}", attempts=row.attempts + 1,
              claimed=done.marked, **fields)
        if done.study_sent:
            event(log, "study.sent", study_uid=row.study_uid)
    elif outcome.result is StoreResult.RETRY:
        _retry(cfg, engine, row, outcome.detail, fields)
    else:
        _fail(engine, row, f"refused: {outcome.detail}", fields)
    return True


def _retry(
    cfg: Config, engine: Engine, row: outbox.ClaimedOutbox, error: str, fields: dict[str, object]
) -> None:
    delay = retry_delay(row.attempts, cfg.send.retry_base, cfg.send.retry_max)
    at = utcnow() + dt.timedelta(seconds=delay)
    outbox.mark_retry(engine, row.id, error, at, lease_until=row.lease_until)
    event(log, "outbox.retry", logging.WARNING, error=error, attempts=row.attempts + 1,
          retry_in=round(delay, 3), **fields)


def _fail(engine: Engine, row: outbox.ClaimedOutbox, reason: str, fields: dict[str, object]) -> None:
    outbox.mark_failed(engine, row.id, reason, lease_until=row.lease_until)
    event(log, "outbox.failed", logging.ERROR, reason=reason, **fields)


def watch(
    cfg: Config, engine: Engine, spool: Spool, vault: Vault, mapper: UIDMapper,
    stop: threading.Event, n: int = 0,
) -> None:
    """Send due outbox rows until ``stop`` is set."""
    worker = worker_name(n)
    workers.work_until_stopped(
        lambda: run_once(cfg, engine, spool, vault, mapper, worker),
        stop, cfg.worker.poll_interval, log, "send.claim_failed",
    )
