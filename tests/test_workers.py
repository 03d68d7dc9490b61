"""``apolo-node worker`` processes beside ``serve`` on one PostgreSQL catalog and one spool: every
study is de-identified and reported exactly once, even when a worker is killed holding a job
(its lease runs out and another process takes the job over)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.models import Instance, Job, Report, Study
from apolo_node.config import Config
from tests.conftest import fresh_postgres_database, make_config
from tests.nodes import REPO, ServeProcess, apolo, config_env
from tests.peers import stop_process, storescu, wait_until
from tests.synthetic import write_study

SLOW = os.environ.get("APOLO_TEST_SLOW") == "1"
pytestmark = pytest.mark.usefixtures("need_dcmtk")


class WorkerProcess:
    """``apolo-node worker --stage S`` as a subprocess, its logs in ``log``."""

    def __init__(self, cfg: Config, stage: str, log: Path, concurrency: int = 1) -> None:
        argv = [sys.executable, "-m", "apolo_node.cli", "worker", "--stage", stage]
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [*argv, "--concurrency", str(concurrency)],
                env=config_env(cfg), stdout=fh, stderr=fh, cwd=REPO,
            )
        self.stage, self.log = stage, log

    def started(self) -> bool:
        return "worker.starting" in self.log.read_text()

    def holds(self, engine: Engine) -> bool:
        """Whether one of this process's threads holds a claimed job now."""
        with engine.connect() as conn:
            workers = conn.execute(select(Job.worker).where(Job.state == "claimed")).scalars().all()
        return any(w and f":{self.proc.pid}:" in w for w in workers)


def fleet_config(tmp_path: Path, postgres_url: str, lease: float) -> Config:
    return make_config(
        tmp_path,
        catalog={"url": fresh_postgres_database(postgres_url)},
        receive={"stable_after": 0.5},
        worker={"lease": lease, "poll_interval": 0.2},
        deid={"processes": 1},
    )


def events(*logs: Path) -> list[str]:
    out = []
    for log in logs:
        out += [json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")]
    return out


def run_fleet(
    tmp_path: Path, cfg: Config, stages: list[str], n_studies: int, per_series: int
) -> None:
    """serve plus a worker per stage; the first ``deidentify`` worker is killed holding a job."""
    studies = [write_study(tmp_path / "in" / str(i), series=1, per_series=per_series) for i in range(n_studies)]
    logs = [tmp_path / "serve.log", *(tmp_path / f"worker{i}.log" for i in range(len(stages)))]
    engine = engine_for(cfg)
    with ServeProcess(cfg, logs[0]):
        fleet = [WorkerProcess(cfg, stage, log) for stage, log in zip(stages, logs[1:])]
        try:
            wait_until(lambda: all(w.started() for w in fleet), what="the workers", timeout=60)
            victim = fleet[stages.index("deidentify")]
            storescu([f for s in studies for f in s.files], cfg.receive.port)
            wait_until(lambda: victim.holds(engine), what="the victim to hold a job", timeout=60, interval=0.02)
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(timeout=10)
            wait_until(
                lambda: _statuses(engine) == ["reported"] * n_studies,
                what="every study reported", timeout=120, interval=0.3,
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
    finally:
        engine.dispose()


def _statuses(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(Study.status)).scalars().all())


def check_exactly_once(
    cfg: Config, engine: Engine, victim_pid: int, n_studies: int, n_instances: int, logs: list[Path]
) -> None:
    with engine.connect() as conn:
        jobs = conn.execute(select(Job.study_id, Job.kind, Job.state, Job.worker, Job.attempts)).all()
        reports = conn.execute(select(Report.study_id)).scalars().all()
        states = conn.execute(select(Instance.state)).scalars().all()
    # One job per study and stage, each done; the one the victim held was taken over.
    assert sorted((j.kind, j.state) for j in jobs) == sorted(
        [("deidentify", "done")] * n_studies + [("describe", "done")] * n_studies
    )
    assert len({(j.study_id, j.kind) for j in jobs}) == 2 * n_studies
    taken_over = [j for j in jobs if j.attempts == 2]
    assert taken_over and all(f":{victim_pid}:" not in (j.worker or "") for j in jobs)
    # Each instance cleaned once, each study reported once (one SR on disk, one report row).
    assert states == ["clean"] * n_instances
    assert len(list((cfg.spool_root / "clean").rglob("*.dcm"))) == n_instances
    assert list((cfg.spool_root / "incoming").rglob("*.dcm")) == []
    assert len(reports) == len(set(reports)) == n_studies
    sr_files = list((cfg.spool_root / "reports").rglob("*.dcm"))
    assert len(sr_files) == n_studies and len({p.parent for p in sr_files}) == n_studies
    seen = events(*logs)
    assert seen.count("study.deidentified") == n_studies, "a study was de-identified twice"
    assert seen.count("study.described") == n_studies, "a study was described twice"
    assert "job.lost" not in seen


def test_three_workers_and_serve_report_every_study_once_with_one_killed(
    tmp_path: Path, postgres_url: str
) -> None:
    cfg = fleet_config(tmp_path, postgres_url, lease=3.0)
    run_fleet(tmp_path, cfg, ["deidentify", "deidentify", "describe"], n_studies=20, per_series=2)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="APOLO_TEST_SLOW=1: 100 studies on seven processes")
def test_six_workers_on_a_hundred_studies(tmp_path: Path, postgres_url: str) -> None:
    cfg = fleet_config(tmp_path, postgres_url, lease=5.0)
    stages = ["deidentify", "deidentify", "deidentify", "describe", "describe", "describe"]
    run_fleet(tmp_path, cfg, stages, n_studies=100, per_series=3)


def test_worker_refuses_an_unknown_stage_and_a_send_stage_with_sending_off(cfg: Config) -> None:
    assert apolo(cfg, "db", "upgrade").returncode == 0
    done = apolo(cfg, "worker", "--stage", "vision")
    assert done.returncode == 2 and "--stage must be one of deidentify, describe, send" in done.stderr
    done = apolo(cfg, "worker", "--stage", "send")
    assert done.returncode == 2 and "[send] enabled is false" in done.stderr
    done = apolo(cfg, "worker", "--stage", "describe", "--concurrency", "0")
    assert done.returncode == 2 and "--concurrency must be >= 1" in done.stderr
