"""Counters and timings of this process, for ``/metrics`` (Prometheus text format).

A shared leaf: the store path and the pipeline workers count here where things happen, and the
web side exposes them. What the catalog already knows (queue depths, the quarantine, the outbox)
is read from it at scrape time instead (``web/metrics.py``), so it is true across processes.
Labels are status codes and stage names only, never a UID or a value.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# seconds: from a fast de-identification of one small instance to a slow model on a whole study
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

INSTANCES = Counter(
    "apolo_instances_received",
    "Instances answered by the store path (C-STORE, STOW-RS, ingest), by DIMSE status: "
    "0x0000 stored (duplicates included), anything else refused",
    ["status"],
)
DUPLICATES = Counter(
    "apolo_instances_duplicate", "Instances received again with a SOP Instance UID already kept"
)
STAGE_SECONDS = Histogram(
    "apolo_stage_seconds",
    "Seconds one job of a stage took in this process (deidentify, describe: a study; send: an object)",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
MODEL_SECONDS = Histogram(
    "apolo_model_call_seconds",
    "Seconds one call to a model backend took in this process (one batch of images for vision)",
    ["stage"],
    buckets=STAGE_BUCKETS,
)


INSTANCES.labels(status="0x0000")  # a scrape shows 0 stored before the first instance


def count_store(status: int, duplicate: bool) -> None:
    """One answer of the store path: its status as the DICOM hex code."""
    INSTANCES.labels(status=f"0x{status:04X}").inc()
    if duplicate:
        DUPLICATES.inc()
