"""``/metrics``: this process's counters (``apolo_node.metrics``) and the catalog's counts.

Queue depths, the quarantine and the outbox are counted in the catalog at scrape time, so they
are true whichever process (serve, a worker elsewhere) moved the rows. A catalog that cannot be
read gives ``apolo_catalog_up 0`` and no counts, never a failed scrape.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from apolo_node.catalog.models import InstanceState, JobState, OutboxState, StudyStatus
from apolo_node.catalog.overview import counts
from apolo_node.catalog.records import DEIDENTIFY
from apolo_node.catalog.reports import DESCRIBE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JOB_STAGES = (DEIDENTIFY, DESCRIBE)
SEND = "send"


class CatalogCollector(Collector):
    """Gauges read from the catalog on each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("apolo_catalog_up", "1 when the catalog answered this scrape")
        try:
            c = counts(self.engine)
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _by("apolo_studies", "Studies by status", "status", StudyStatus, c.studies)
        yield _by("apolo_instances", "Instances by state", "state", InstanceState, c.instances)
        quarantined = GaugeMetricFamily(
            "apolo_quarantined_instances", "Instances in quarantine (not yet released or purged)"
        )
        quarantined.add_metric([], c.instances.get(InstanceState.QUARANTINED.value, 0))
        yield quarantined
        depth = GaugeMetricFamily(
            "apolo_queue_depth",
            "Work waiting per stage: pending jobs (deidentify, describe), pending outbox rows (send)",
            labels=["stage"],
        )
        running = GaugeMetricFamily(
            "apolo_jobs_claimed", "Jobs a worker holds now, per stage", labels=["stage"]
        )
        failed = GaugeMetricFamily(
            "apolo_jobs_failed", "Jobs that failed for good, per stage", labels=["stage"]
        )
        for stage in JOB_STAGES:
            depth.add_metric([stage], c.jobs.get((stage, JobState.PENDING.value), 0))
            running.add_metric([stage], c.jobs.get((stage, JobState.CLAIMED.value), 0))
            failed.add_metric([stage], c.jobs.get((stage, JobState.FAILED.value), 0))
        depth.add_metric([SEND], c.outbox.get(OutboxState.PENDING.value, 0))
        yield from (depth, running, failed)
        yield _by("apolo_outbox", "Outbox rows by state", "state", OutboxState, c.outbox)


def _by(name: str, doc: str, label: str, states: type[StudyStatus | InstanceState | OutboxState],
        found: dict[str, int]) -> GaugeMetricFamily:
    """One gauge with a sample for every known state (0 when none), and any unknown state seen."""
    family = GaugeMetricFamily(name, doc, labels=[label])
    for state in [s.value for s in states] + sorted(set(found) - {s.value for s in states}):
        family.add_metric([state], found.get(state, 0))
    return family


def exposition(engine: Engine) -> bytes:
    """The whole scrape: process metrics and our counters, then the catalog's gauges."""
    catalog = CollectorRegistry(auto_describe=False)
    catalog.register(CatalogCollector(engine))
    return generate_latest(REGISTRY) + generate_latest(catalog)
