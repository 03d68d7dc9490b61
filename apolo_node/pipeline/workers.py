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

from apolo_node.logs import event


def worker_name(kind: str, n: int = 0) -> str:
    """``host:pid:<kind><n>``: which process holds a claim, for people reading the catalog."""
    return f"{socket.gethostname()}:{os.getpid()}:{kind}{n}"


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
