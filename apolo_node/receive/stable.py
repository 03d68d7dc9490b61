"""Study-stable detection: a study quiet for ``stable_after`` seconds moves on to the next stage."""

from __future__ import annotations

import threading

from sqlalchemy import Engine

from apolo_node.catalog.records import queue_stable_studies
from apolo_node.logs import event, get_logger

log = get_logger("receive")


def queue_stable(engine: Engine, stable_after: float) -> list[str]:
    """Queue every stable study now; log each (pseudonymous UID only)."""
    queued = queue_stable_studies(engine, stable_after)
    for study_uid in queued:
        event(log, "study.queued", study_uid=study_uid)
    return queued


def watch(engine: Engine, stable_after: float, interval: float, stop: threading.Event) -> None:
    """Look for stable studies every ``interval`` seconds until ``stop`` is set."""
    while not stop.wait(interval):
        try:
            queue_stable(engine, stable_after)
        except Exception:  # catalog briefly unavailable: try again next round
            log.warning("stable.check_failed", exc_info=True)
