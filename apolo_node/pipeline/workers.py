"""What every pipeline worker shares: its name in the job and outbox rows, and its loop."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable


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
