"""Run the node for a test: in this process (fast), or as ``apolo-node serve`` (the real thing)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.migrate import upgrade
from apolo_node import config as config_mod
from apolo_node.config import Config
from apolo_node.pipeline.node import Node
from tests.peers import PeerError, port_open, stop_process, wait_until

REPO = Path(__file__).resolve().parents[1]


def upgraded_engine(cfg: Config) -> Engine:
    engine = engine_for(cfg)
    upgrade(engine)
    return engine


@contextmanager
def running_node(cfg: Config) -> Iterator[Node]:
    """The node's SCP and workers in this process, on the catalog made for ``cfg``."""
    upgraded_engine(cfg).dispose()
    node = Node(cfg)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def config_env(cfg: Config) -> dict[str, str]:
    """The settings of ``cfg`` that differ from ``config/apolo.toml`` as APOLO_* environment
    variables, for a node run as a subprocess (a ``--config`` file still decides the rest)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APOLO_")}
    env["APOLO_CONFIG"] = str(REPO / "config" / "apolo.toml")
    defaults = config_mod.load(REPO / "config" / "apolo.toml", env={})
    for table in dataclasses.fields(cfg):
        settings, default = getattr(cfg, table.name), getattr(defaults, table.name)
        for key in dataclasses.fields(settings):
            value = getattr(settings, key.name)
            if value == getattr(default, key.name):
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list):
                text = ",".join(value)
            else:
                text = str(value)
            env[f"APOLO_{table.name.upper()}__{key.name.upper()}"] = text
    return env


def apolo(cfg: Config, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run an ``apolo-node`` command on ``cfg`` and return what it did."""
    return subprocess.run(
        [sys.executable, "-m", "apolo_node.cli", *args],
        env=config_env(cfg), capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )


class ServeProcess:
    """``apolo-node serve`` as a subprocess; its stderr (the logs) goes to ``log``."""

    def __init__(self, cfg: Config, log: Path) -> None:
        self.cfg = cfg
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        done = apolo(self.cfg, "db", "upgrade")
        if done.returncode != 0:
            raise PeerError(f"apolo-node db upgrade failed: {done.stderr}")
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "apolo_node.cli", "serve"],
                env=config_env(self.cfg), stdout=fh, stderr=fh, cwd=REPO,
            )
        wait_until(
            lambda: port_open(self.cfg.receive.port),
            what="apolo-node serve", timeout=60, proc=self.proc, log=self.log,
        )
        return self

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)
