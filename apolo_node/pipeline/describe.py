"""The vision worker: a de-identified study becomes a TID 1500 SR and findings in the catalog.

For each ``describe`` job: the study's clean instances are read (headers first; pixels only
for the slices and frames the ``[vision]`` settings choose), described by the configured
backend, written as one Comprehensive SR in its own series of the de-identified study under
``reports/<study>/<sr uid>.dcm``, and catalogued with one row per finding; the study becomes
``reported``. The model's prose and reasoning trace become the study's narrative (findings text
and impression, ``sr.narrative``; a templated, non-diagnostic one when the backend writes no
prose, as the offline baseline does), kept in the same SR and in the catalog's report row. A backend that fails (a model server down) leaves the job to be claimed again
when its lease runs out; after ``max_attempts`` the study fails with the error's kind only.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.config import disable_value_validation
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Engine, and_, select

from apolo_node.catalog import jobs
from apolo_node.catalog.cleaning import fail_study
from apolo_node.catalog.models import Instance, InstanceState, StudyStatus
from apolo_node.catalog.reports import DESCRIBE, ReportRecord, record_report, report_path
from apolo_node.config import Config
from apolo_node.logs import event, get_logger
from apolo_node.metrics import STAGE_SECONDS
from apolo_node.pipeline import workers
from apolo_node.spool import REPORTS, Spool
from apolo_node.sr import measurement_report
from apolo_node.sr.narrative import compose_narrative
from apolo_node.vision.backend import VisionBackend
from apolo_node.vision.look import choose_instances, look

log = get_logger("vision")
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class DescribeOutcome:
    """What one job did: the SR written, how many findings, whether the study is now reported."""

    sr_path: str
    findings: int
    images: int
    unparsed: int
    reported: bool


def worker_name(n: int = 0) -> str:
    return workers.worker_name("vision", n)


def clean_paths(engine: Engine, study_id: int) -> list[str]:
    """Spool-relative paths of the study's clean instances."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Instance.clean_path)
            .where(and_(Instance.study_id == study_id, Instance.state == InstanceState.CLEAN.value))
            .order_by(Instance.id)
        ).scalars().all()
        conn.rollback()
    return [r for r in rows if r]


class Stopping(RuntimeError):
    """The node is stopping: give the job back undone (nothing was written yet)."""


class LostClaim(RuntimeError):
    """The job's lease was taken over by another worker; stop without writing anything."""


def describe_study(
    engine: Engine, spool: Spool, backend: VisionBackend, cfg: Config, job: jobs.ClaimedJob,
    stop: threading.Event | None = None, worker: str | None = None,
) -> DescribeOutcome:
    """Describe the job's study, write its SR durably, then catalogue it (in that order)."""

    def read(rel: str) -> Dataset:  # before each instance: a stop waits one at most; the lease holds
        if stop is not None and stop.is_set():
            raise Stopping(f"job {job.id} interrupted by stop")
        if worker is not None and not jobs.heartbeat(engine, job, worker, cfg.worker.lease):
            raise LostClaim(f"job {job.id} was claimed by another worker")
        return dcmread(spool.root / rel)

    paths = clean_paths(engine, job.study_id)
    with disable_value_validation():
        headers = {}
        for rel in paths:
            header = dcmread(spool.root / rel, stop_before_pixels=True)
            headers[str(header.SOPInstanceUID)] = (rel, header)
        chosen = choose_instances([h for _, h in headers.values()], cfg.vision)
        datasets = (read(headers[str(h.SOPInstanceUID)][0]) for h in chosen)
        result = look(backend, datasets, cfg.vision)
    # The Image Library lists the images looked at (every finding refers to one of them).
    evidence = chosen or [h for _, h in headers.values()][:1]
    if not evidence:
        raise LookupError(f"study {job.study_uid} has no clean instance to report on")
    sr_uid, series_uid = generate_uid(prefix=None), generate_uid(prefix=None)  # 2.25 UUIDs
    narrative = compose_narrative(
        result.free_text, result.trace, result.findings, result.images, result.algorithm
    )
    sr = measurement_report(
        result.findings, evidence, result.algorithm, series_instance_uid=series_uid,
        sop_instance_uid=sr_uid, disclaimer=result.disclaimer, narrative=narrative,
    )
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    relative = f"{REPORTS}/{job.study_uid}/{sr_uid}.dcm"
    if worker is not None and not jobs.heartbeat(engine, job, worker, cfg.worker.lease):
        raise LostClaim(f"job {job.id} was claimed by another worker")  # its taker reports
    spool.write(relative, buffer.getvalue())
    previous = report_path(engine, job.study_uid)
    reported = record_report(
        engine,
        ReportRecord(
            job.study_uid, sr_uid, series_uid, relative, result.algorithm, result.images, result.unparsed,
            narrative.findings, narrative.impression, narrative.trace,
        ),
        result.findings,
        send=cfg.send.enabled and cfg.send.reports,
    )
    if previous is not None and previous != relative:
        spool.remove(previous)  # replaced: the catalog no longer names it
    event(
        log, "study.described", study_uid=job.study_uid, images=result.images,
        findings=len(result.findings), unparsed=result.unparsed, skipped=len(result.skipped),
        algorithm=result.algorithm.name,
    )
    return DescribeOutcome(relative, len(result.findings), result.images, result.unparsed, reported)


def run_once(
    engine: Engine, spool: Spool, backend: VisionBackend, cfg: Config, worker: str,
    stop: threading.Event | None = None,
) -> bool:
    """Claim and do one ``describe`` job; False when there was none."""
    job = jobs.claim(engine, DESCRIBE, worker, cfg.worker.lease, max_attempts=MAX_ATTEMPTS)
    if job is None:
        return False
    try:
        with STAGE_SECONDS.labels(DESCRIBE).time():
            describe_study(engine, spool, backend, cfg, job, stop, worker)
    except Stopping:
        jobs.release(engine, job, worker)
        return True
    except LostClaim:
        event(log, "job.lost", 30, job=job.id, study_uid=job.study_uid)
        return True
    except Exception as exc:
        reason = f"vision stage failed ({type(exc).__name__})"
        log.error("job.failed", exc_info=True, extra={"fields": {"job": job.id, "study_uid": job.study_uid}})
        if job.attempts >= MAX_ATTEMPTS:
            if jobs.fail(engine, job, worker, reason):  # else another worker holds it now
                fail_study(engine, job.study_id, reason, from_status=StudyStatus.DEIDENTIFIED)
        # else: left claimed; once its lease runs out it is claimed again (a server may be back)
        return True
    jobs.finish(engine, job, worker)
    return True


def watch(engine: Engine, spool: Spool, backend: VisionBackend, cfg: Config, stop: threading.Event, n: int = 0) -> None:
    """Work ``describe`` jobs until ``stop`` is set."""
    worker = worker_name(n)
    workers.work_until_stopped(
        lambda: run_once(engine, spool, backend, cfg, worker, stop),
        stop, cfg.worker.poll_interval, log, "vision.claim_failed",
    )
