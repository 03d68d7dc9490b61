"""``apolo-node worker`` processes beside ``serve`` on one PostgreSQL catalog and one spool: every
study is de-identified and reported exactly once, even when a worker is killed holding a job
(its lease runs out and another process takes the job over)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
import logging
import os
import signal
import threading
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydicom import dcmread
from sqlalchemy import Engine, select

from apolo_node.catalog import jobs
from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.models import Instance, Job, Report, utcnow
from apolo_node.catalog.records import queue_stable_studies, record_instance
from apolo_node.config import Config, ConfigError
from apolo_node.pipeline import workers
from apolo_node.pipeline.stages import StageWorker
from tests.conftest import fresh_postgres_database, make_config
from tests.fleet import WorkerProcess, events, statuses
from tests.nodes import ServeProcess, upgraded_engine
from tests.peers import LOCALHOST, Storescp, start_storescu, stop_process, wait_until
from tests.synthetic import write_study
from tests.test_catalog import rec

SLOW = os.environ.get("APOLO_TEST_SLOW") == "1"
pytestmark = pytest.mark.usefixtures("need_dcmtk")


def fleet_config(tmp_path: Path, postgres_url: str, lease: float, pacs: Storescp | None = None) -> Config:
    send: dict[str, object] = {}
    if pacs is not None:  # results go back to a PACS: the send stage runs too
        send = {"enabled": True, "host": LOCALHOST, "port": pacs.port, "ae_title": pacs.ae_title,
                "timeout": 10.0, "retry_base": 0.2, "retry_max": 1.0}
    return make_config(
        tmp_path,
        catalog={"url": fresh_postgres_database(postgres_url)},
        receive={"stable_after": 0.5},
        worker={"lease": lease, "poll_interval": 0.2},
        deid={"processes": 1, **({"vault_key": Fernet.generate_key().decode()} if send else {})},
        send=send,
        web={"enabled": False},
    )


def run_fleet(
    tmp_path: Path, cfg: Config, stages: list[str], n_studies: int, per_series: int,
    pacs: Storescp | None = None,
) -> None:
    """serve plus a worker per stage; the first ``deidentify`` worker is killed holding a job."""
    studies = [write_study(tmp_path / "in" / str(i), series=1, per_series=per_series) for i in range(n_studies)]
    logs = [tmp_path / "serve.log", *(tmp_path / f"worker{i}.log" for i in range(len(stages)))]
    engine = engine_for(cfg)
    with ServeProcess(cfg, logs[0]):
        fleet = [WorkerProcess(cfg, stage, log) for stage, log in zip(stages, logs[1:])]
        try:
            wait_until(lambda: all(w.started() for w in fleet), what="the workers", timeout=120)
            victim = fleet[stages.index("deidentify")]
            sender = start_storescu([f for s in studies for f in s.files], cfg.receive.port)
            try:  # the kill lands while studies still arrive and are worked
                wait_until(lambda: victim.holds(engine), what="the victim to hold a job", timeout=60, interval=0.02)
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait(timeout=10)
                out, _ = sender.communicate(timeout=300)
                assert sender.returncode == 0, out
            finally:
                stop_process(sender)
            final = "sent" if pacs is not None else "reported"
            wait_until(
                lambda: statuses(engine) == [final] * n_studies,
                what=f"every study {final}", timeout=60 + 3 * n_studies, interval=0.3,
            )
            for w in fleet:
                if w is not victim:
                    w.proc.send_signal(signal.SIGTERM)
                    assert w.proc.wait(timeout=30) == 0, w.log.read_text()[-2000:]
                    assert events(w.log)[-1] == "worker.stopped"
        finally:
            for w in fleet:
                stop_process(w.proc)
    try:
        check_exactly_once(cfg, engine, victim.proc.pid, n_studies, n_studies * per_series, logs)
        if pacs is not None:  # every report SR reached the PACS once (it keeps each copy it gets)
            with engine.connect() as conn:
                sent = sorted(conn.execute(select(Report.sop_instance_uid)).scalars().all())
            received = sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in pacs.files())
            assert set(sent) <= set(received) and max(Counter(received).values()) == 1
    finally:
        engine.dispose()


def check_exactly_once(
    cfg: Config, engine: Engine, victim_pid: int, n_studies: int, n_instances: int, logs: list[Path]
) -> None:
    """Each instance cleaned once, each job worked by one worker once, one report per study.

    A study whose late instances re-open it gets a new job (the pending one is ``cancelled``):
    that is the pipeline's rule, not a duplicate; a job worked twice would log its study twice.
    """
    with engine.connect() as conn:
        jobs = conn.execute(select(Job.kind, Job.state, Job.worker, Job.attempts)).all()
        reports = conn.execute(select(Report.study_id)).scalars().all()
        states = conn.execute(select(Instance.state)).scalars().all()
    assert {j.state for j in jobs} <= {"done", "cancelled"}, "no job failed or was left claimed"
    done = Counter(j.kind for j in jobs if j.state == "done")
    assert done["deidentify"] >= n_studies and done["describe"] >= n_studies
    # The job the victim held was taken over by another process; none ended as the victim's.
    assert any(j.attempts >= 2 for j in jobs)
    assert all(f":{victim_pid}:" not in (j.worker or "") for j in jobs if j.state == "done")
    assert states == ["clean"] * n_instances
    assert len(list((cfg.spool_root / "clean").rglob("*.dcm"))) == n_instances
    assert list((cfg.spool_root / "incoming").rglob("*.dcm")) == []
    assert len(reports) == len(set(reports)) == n_studies
    sr_files = list((cfg.spool_root / "reports").rglob("*.dcm"))
    assert len(sr_files) == n_studies and len({p.parent for p in sr_files}) == n_studies
    seen = Counter(events(*logs))
    assert seen["study.deidentified"] == done["deidentify"], "a job was worked twice"
    assert seen["study.described"] == done["describe"], "a job was described twice"
    assert seen["job.failed"] == 0


def test_three_workers_and_serve_report_every_study_once_with_one_killed(
    tmp_path: Path, postgres_url: str
) -> None:
    cfg = fleet_config(tmp_path, postgres_url, lease=8.0)
    run_fleet(tmp_path, cfg, ["deidentify", "deidentify", "describe"], n_studies=20, per_series=2)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="APOLO_TEST_SLOW=1: 100 studies on nine processes and a PACS")
def test_eight_workers_on_a_hundred_studies_sent_back_once(tmp_path: Path, postgres_url: str) -> None:
    with Storescp(tmp_path / "pacs", extra_args=["-uf"]) as pacs:  # unique names: a copy is a file
        cfg = fleet_config(tmp_path, postgres_url, lease=15.0, pacs=pacs)
        stages = ["deidentify"] * 3 + ["describe"] * 3 + ["send"] * 2
        run_fleet(tmp_path, cfg, stages, n_studies=100, per_series=3, pacs=pacs)


@pytest.mark.parametrize(
    "stage, concurrency, match",
    [
        ("vision", 1, r"--stage must be one of deidentify, describe, send, got 'vision'"),
        ("describe", 0, r"--concurrency must be >= 1, got 0"),
        ("send", 1, r"\[send\] enabled is false: a send worker would have nothing to send"),
    ],
)
def test_a_worker_refuses_what_it_cannot_work(cfg: Config, stage: str, concurrency: int, match: str) -> None:
    upgraded_engine(cfg).dispose()
    with pytest.raises(ConfigError, match=match):
        StageWorker(cfg, stage, concurrency)


def test_a_worker_builds_its_stage_and_stops_before_claiming(cfg: Config) -> None:
    upgraded_engine(cfg).dispose()
    worker = StageWorker(cfg, "describe", concurrency=2)
    worker.start()
    worker.stop()
    assert [t.is_alive() for t in worker._threads] == [False, False, False]  # two loops, the keeper


def test_a_live_process_keeps_its_leases_and_no_other_process_s(engine: Engine) -> None:
    """keep_leases renews what this process holds (a slow job is not taken over while it lives)
    and leaves another process's claim to run out (a killed worker's job is taken over)."""
    t0 = utcnow() - dt.timedelta(seconds=300)
    for study in ("2.25.71", "2.25.72"):
        record_instance(engine, rec(study, study + "1", study + "11"), now=t0)
    queue_stable_studies(engine, 30, now=t0 + dt.timedelta(seconds=31))
    ours = jobs.claim(engine, "deidentify", workers.worker_name("deid", 0), lease=3.0)
    theirs = jobs.claim(engine, "deidentify", "elsewhere_host:1:deid0", lease=1.0)
    assert ours is not None and theirs is not None
    stop = threading.Event()
    keeper = threading.Thread(target=workers.keep_leases, args=(engine, 3.0, stop, logging.getLogger("t")))
    keeper.start()
    try:
        wait_until(lambda: jobs.claim(engine, "deidentify", "taker:2:deid0", 30.0) is not None,
                   what="the other process's job taken over", timeout=20, interval=0.1)
    finally:
        stop.set()
        keeper.join()
    assert jobs.claim(engine, "deidentify", "taker:2:deid0", 30.0) is None, "ours was renewed"
    assert jobs.finish(engine, ours, workers.worker_name("deid", 0))
