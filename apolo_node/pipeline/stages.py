"""One stage of the pipeline as its own process: ``apolo-node worker --stage S [--concurrency N]``.

A site that outgrows one machine runs ``serve`` where the PACS sends (it receives, detects
stable studies and also works every stage) and adds worker processes, here or on other
machines, that share its catalog (PostgreSQL) and its spool (a shared filesystem). Each worker
thread claims jobs through ``catalog.jobs`` (or outbox rows through ``catalog.outbox`` for
``send``): on PostgreSQL ``FOR UPDATE SKIP LOCKED`` hands each job to one claimant, and a lease
that is not renewed (a worker killed, a machine gone) lets another take the job over once it
ends. On SQLite the claim runs inside ``BEGIN IMMEDIATE``, which gives the same guarantee to
processes on one machine (SQLite's file locks); SQLite on a network filesystem is not safe,
so several machines need PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from apolo_node.config import Config, ConfigError
from apolo_node.logs import event, get_logger
from apolo_node.pipeline import workers
from apolo_node.pipeline.parts import Parts

log = get_logger("worker")
STAGES = ("deidentify", "describe", "send")


Loop = Callable[[threading.Event], None]


def stage_loops(cfg: Config, stage: str, concurrency: int) -> tuple[list[Loop], Callable[[], None]]:
    """The ``concurrency`` loops that work ``stage`` and the one that keeps their leases (each
    takes the stop event), and what to close.

    Everything the stage needs is built here, so a bad setting or a backend that cannot run
    stops the process before it claims anything.
    """
    if stage not in STAGES:
        raise ConfigError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
    if stage == "send" and not cfg.send.enabled:
        raise ConfigError("[send] enabled is false: a send worker would have nothing to send")
    parts = Parts(cfg)  # the same parts serve and ingest build
    engine, spool = parts.engine, parts.spool
    keeper: Loop = lambda stop: workers.keep_leases(engine, cfg.worker.lease, stop, log)  # noqa: E731
    try:
        if stage == "deidentify":
            from apolo_node.pipeline import deidentify

            deidentifier, vault = parts.deidentifier, parts.vault
            loops: list[Loop] = [
                lambda stop, n=n: deidentify.watch(cfg, engine, spool, deidentifier, stop, vault, n)
                for n in range(concurrency)
            ]
        elif stage == "describe":
            from apolo_node.pipeline import describe

            backend = parts.vision  # one model for every thread: a server serves them all
            loops = [
                lambda stop, n=n: describe.watch(engine, spool, backend, cfg, stop, n)
                for n in range(concurrency)
            ]
        else:
            from apolo_node.pipeline import sender
            from apolo_node.pseudonym import mapper

            vault, uid_mapper = parts.vault, mapper(cfg)
            loops = [
                lambda stop, n=n: sender.watch(cfg, engine, spool, vault, uid_mapper, stop, n)
                for n in range(concurrency)
            ]
    except BaseException:
        parts.close()
        raise
    return [*loops, keeper], parts.close


class StageWorker:
    """``concurrency`` threads working one stage until stopped."""

    def __init__(self, cfg: Config, stage: str, concurrency: int = 1) -> None:
        self.stage = stage
        self.concurrency = concurrency
        self._loops, self._close = stage_loops(cfg, stage, concurrency)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        event(log, "worker.starting", stage=self.stage, concurrency=self.concurrency)
        for n, loop in enumerate(self._loops):
            thread = threading.Thread(
                target=loop, args=(self._stop,), name=f"{self.stage}-{n}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop claiming; a job under way is given back (``release``) or finished first."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._close()
        event(log, "worker.stopped", stage=self.stage)

    def run_until_signalled(self) -> None:
        workers.run_until_signalled(self.start, self.stop, log)
