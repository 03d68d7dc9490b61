"""The de-identification worker: a queued study's spooled instances become clean files.

For each ``deidentify`` job: every instance still ``received`` is read from ``incoming/``,
cleaned and verified (``deid.clean_instance``), written durably to ``clean/<study>/<series>/
<sop>.dcm`` and marked clean; one that cannot be read, cleaned or verified is encrypted into
``quarantine/<study>/<sop>.dcm.enc`` (``pipeline.quarantine``) and marked quarantined with a
reason that holds no PHI. It never reaches ``clean/``. With sending back enabled the originals'
UIDs and Patient/Study module go to the encrypted vault first; either way the incoming file of
a cleaned instance is then deleted, so no readable original is kept. The study ends
``deidentified`` (with a reason when some instances were quarantined) or ``quarantined``.

Instances are cleaned in ``[deid] processes`` child processes at once (``deid.isolate``), under
``[deid] max_depth`` and ``instance_timeout``: what is too deep, too slow or kills the process is
quarantined with that reason, never retried as a job.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.config import disable_value_validation
from sqlalchemy import Engine

from apolo_node.catalog import jobs
from apolo_node.catalog.cleaning import (
    PendingInstance,
    fail_study,
    mark_clean,
    pending_instances,
    settle_study,
)
from apolo_node.catalog.records import DEIDENTIFY
from apolo_node.config import Config
from apolo_node.deid import Deidentifier, DeidError
from apolo_node.deid.command import CleanInstance
from apolo_node.deid.isolate import Interrupted, IsolatedCleaner, process_count
from apolo_node.deid.quarantine import Quarantine
from apolo_node.deid.vault import Vault
from apolo_node.logs import event, get_logger
from apolo_node.metrics import STAGE_SECONDS
from apolo_node.pipeline import workers
from apolo_node.pipeline.quarantine import quarantine_instance
from apolo_node.spool import CLEAN, Spool

log = get_logger("deid")
HEARTBEAT_EVERY = 20  # instances


@dataclass(frozen=True)
class StudyOutcome:
    """What one job did: counts, and the study's new status (None if it was re-opened)."""

    clean: int
    quarantined: int
    status: str | None


def worker_name(n: int = 0) -> str:
    return workers.worker_name("deid", n)


class LostClaim(RuntimeError):
    """The job's lease was taken over by another worker; stop without touching it."""


class Stopping(RuntimeError):
    """The node is stopping: give the job back; what was cleaned stays clean."""


def deidentify_study(
    cfg: Config, engine: Engine, spool: Spool, cleaner: IsolatedCleaner,
    job: jobs.ClaimedJob, worker: str, stop: threading.Event | None = None,
    vault: Vault | None = None,
) -> StudyOutcome:
    """Clean every waiting instance of the job's study; settle the study's status.

    Instances are cleaned in ``cleaner``'s child processes, several at once, and settled in
    order: one nested deeper than ``[deid]
    max_depth``, slower than ``instance_timeout`` or that kills its process is quarantined with
    that reason at once, so a poison instance never fails (and re-runs) its study's job.
    """
    clean = quarantined = 0
    pending = ((inst, spool.root / inst.path) for inst in pending_instances(engine, job.study_id))
    try:
        for n, (inst, result) in enumerate(cleaner.clean_all(pending, stop), start=1):
            if stop is not None and stop.is_set():
                raise Stopping(f"job {job.id} interrupted by stop")
            if n % HEARTBEAT_EVERY == 0 and not jobs.heartbeat(engine, job, worker, cfg.worker.lease):
                raise LostClaim(f"job {job.id} was claimed by another worker")
            if isinstance(result, DeidError):
                reason = str(result)
                quarantine_instance(
                    engine, spool, Quarantine.from_config(cfg), inst.id, job.study_uid,
                    inst.sop_instance_uid, inst.path, reason,
                )
                quarantined += 1
                event(
                    log, "instance.quarantined", 30, study_uid=job.study_uid,
                    sop_instance_uid=inst.sop_instance_uid, reason=reason,
                )
                continue
            _keep_clean(engine, spool, inst, job.study_uid, result, vault)
            clean += 1
    except Interrupted:
        raise Stopping(f"job {job.id} interrupted by stop") from None
    status = settle_study(engine, job.study_id)
    event(
        log, "study.deidentified", study_uid=job.study_uid, clean=clean,
        quarantined=quarantined, status=status,
    )
    return StudyOutcome(clean, quarantined, status)


def _keep_clean(
    engine: Engine, spool: Spool, inst: PendingInstance, study_uid: str, result: CleanInstance,
    vault: Vault | None,
) -> None:
    """Write a cleaned instance durably, mark it clean, delete its original."""
    if vault is not None:  # before the clean file: a result can always find its way back
        with disable_value_validation():  # pydicom's warnings quote values
            original = dcmread(spool.root / inst.path, stop_before_pixels=True)
        vault.put(study_uid, inst.sop_instance_uid, original)
    relative = f"{CLEAN}/{result.relative_path.as_posix()}"
    spool.write(relative, result.encoded)
    mark_clean(engine, inst.id, relative, result.study_date, result.body_part)
    spool.remove(inst.path)  # the vault, if any, keeps what sending back needs


def run_once(
    cfg: Config, engine: Engine, spool: Spool, deidentifier: Deidentifier, worker: str,
    stop: threading.Event | None = None, vault: Vault | None = None,
    cleaner: IsolatedCleaner | None = None,
) -> bool:
    """Claim and do one job; False when there was none.

    Without a ``cleaner`` (a worker keeps one for all its jobs), one is started for this job.
    """
    job = jobs.claim(engine, DEIDENTIFY, worker, cfg.worker.lease)
    if job is None:
        return False
    try:
        with STAGE_SECONDS.labels(DEIDENTIFY).time():
            if cleaner is None:
                with IsolatedCleaner(deidentifier, cfg.deid.instance_timeout, process_count(cfg)) as own:
                    deidentify_study(cfg, engine, spool, own, job, worker, stop, vault)
            else:
                deidentify_study(cfg, engine, spool, cleaner, job, worker, stop, vault)
    except Stopping:
        jobs.release(engine, job, worker)
        return True
    except LostClaim:
        event(log, "job.lost", 30, job=job.id, study_uid=job.study_uid)
        return True
    except Exception as exc:  # a bug or the disk: the study fails with the error's kind only
        reason = f"de-identification failed ({type(exc).__name__})"
        log.error("job.failed", exc_info=True, extra={"fields": {"job": job.id, "study_uid": job.study_uid}})
        if jobs.fail(engine, job, worker, reason):  # else another worker holds it now
            fail_study(engine, job.study_id, reason)
        return True
    jobs.finish(engine, job, worker)
    return True


def watch(
    cfg: Config, engine: Engine, spool: Spool, deidentifier: Deidentifier,
    stop: threading.Event, vault: Vault | None = None, n: int = 0,
) -> None:
    """Work ``deidentify`` jobs until ``stop`` is set, with one worker process for all of them."""
    worker = worker_name(n)
    with IsolatedCleaner(deidentifier, cfg.deid.instance_timeout, process_count(cfg)) as cleaner:
        workers.work_until_stopped(
            lambda: run_once(cfg, engine, spool, deidentifier, worker, stop, vault, cleaner),
            stop, cfg.worker.poll_interval, log, "deid.claim_failed",
        )
