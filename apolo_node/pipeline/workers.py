"""What every pipeline worker shares: its name in the job and outbox rows, its loop, and how a
process of workers (``serve``, ``worker``) runs until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

from sqlalchemy import Engine

from apolo_node.catalog import jobs
from apolo_node.logs import event


def process_prefix() -> str:
    """``host:pid:``: what the names of this process's workers start with."""
    return f"{socket.gethostname()}:{os.getpid()}:"


def worker_name(kind: str, n: int = 0) -> str:
    """``host:pid:<kind><n>``: which process holds a claim, for people reading the catalog."""
    return f"{process_prefix()}{kind}{n}"


def keep_leases(engine: Engine, lease: float, stop: threading.Event, log: logging.Logger) -> None:
    """Renew this process's job leases every third of ``lease`` until ``stop`` is set.

    The lease then measures whether the process lives, not how long one instance or one model
    call takes: a slow job of a live worker is never taken over (two workers cleaning one study
    collide on its files), and a killed worker's jobs are taken over within one lease.
    """
    prefix = process_prefix()
    while not stop.wait(lease / 3):
        try:
            event(log, "lease.renewed", logging.DEBUG, jobs=jobs.renew_claims(engine, prefix, lease))
        except Exception:  # the catalog briefly unavailable: the next round tries again
            log.warning("lease.renew_failed", exc_info=True)


def work_until_stopped(
    run_once: Callable[[], bool], stop: threading.Event, poll_interval: float,
    log: logging.Logger, failed_event: str,
) -> None:
    """Call ``run_once`` while it finds work; when it finds none, wait ``poll_interval``.

    An exception (the catalog briefly unavailable) is logged by type and the loop goes on.
    """
    while not stop.is_set():
        try:
            if run_once():
                continue
        except Exception:
            log.warning(failed_event, exc_info=True)
        stop.wait(poll_interval)


def run_until_signalled(start: Callable[[], None], stop: Callable[[], None], log: logging.Logger) -> None:
    """``start``, wait for SIGTERM or SIGINT, then ``stop`` (also when ``start`` fails)."""
    done = threading.Event()

    def _signal(signum: int, _frame: FrameType | None) -> None:
        event(log, "node.signal", signal=signal.Signals(signum).name)
        done.set()

    previous = {s: signal.signal(s, _signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        start()
        done.wait()
    finally:
        stop()
        for s, h in previous.items():
            signal.signal(s, h)
