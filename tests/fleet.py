"""Worker processes beside ``serve`` for tests and ``scripts/bench_pipeline.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine, select

from apolo_node.catalog.models import Job, Study
from apolo_node.config import Config
from tests.nodes import REPO, config_env


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


def events(*logs: Path) -> list[str]:
    """The ``event`` of every JSON log line of these files, in file order."""
    out = []
    for log in logs:
        out += [json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")]
    return out


def statuses(engine: Engine) -> list[str]:
    """Every study's status, sorted."""
    with engine.connect() as conn:
        return sorted(conn.execute(select(Study.status)).scalars().all())
