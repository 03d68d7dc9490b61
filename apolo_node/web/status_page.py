"""``/``: the status page for people, rendered on the server from the catalog (no build step).

Jinja2 escapes every value. What it shows holds no PHI: pseudonymous UIDs, statuses, reasons
(which name a tag or a rule, never a value), counts and times. Audit entries show who did what
to which studies, not the question asked (free text a person typed may name a patient).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import lru_cache

from jinja2 import Environment, PackageLoader, Template, select_autoescape
from sqlalchemy import Engine

from apolo_node import __version__
from apolo_node.catalog.answers import recent_audit
from apolo_node.catalog.models import InstanceState, JobState, OutboxState
from apolo_node.catalog.outbox import outbox_rows
from apolo_node.catalog.overview import counts
from apolo_node.catalog.quarantine import list_quarantined
from apolo_node.catalog.records import list_studies
from apolo_node.web.metrics import JOB_STAGES, SEND

SHOWN = 100  # rows per table: the page stays light on a large catalog
AUDIT_SHOWN = 20


@lru_cache(maxsize=1)
def _template() -> Template:
    env = Environment(
        loader=PackageLoader("apolo_node.web", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    return env.get_template("status.html")


def render(engine: Engine, workers: Callable[[], list[str]] | None = None) -> str:
    """The page as HTML, read from the catalog now."""
    c = counts(engine)
    queues = [(s, c.jobs.get((s, JobState.PENDING.value), 0)) for s in JOB_STAGES]
    queues.append((SEND, c.outbox.get(OutboxState.PENDING.value, 0)))
    return _template().render(
        version=__version__,
        now=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        workers=None if workers is None else workers(),
        queues=queues,
        study_total=sum(c.studies.values()),
        studies=list_studies(engine, limit=SHOWN),
        quarantined_total=c.instances.get(InstanceState.QUARANTINED.value, 0),
        quarantine=list_quarantined(engine)[:SHOWN],
        outbox_counts=c.outbox,
        outbox=outbox_rows(engine, newest=SHOWN),
        audit=recent_audit(engine, AUDIT_SHOWN),
    )
