"""A node's catalog with a study through de-identification, served over HTTP: shared by the
web tests (plain HTTP in test_web.py, headless Chromium in test_web_browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from pydicom import dcmread
from sqlalchemy import Engine

from apolo_node.catalog.answers import record_audit
from apolo_node.catalog.engine import make_engine
from apolo_node.catalog.outbox import enqueue
from apolo_node.catalog.records import queue_stable_studies
from apolo_node.config import Config
from apolo_node.deid import Deidentifier
from apolo_node.pipeline import deidentify
from apolo_node.pseudonym import mapper
from apolo_node.spool import Spool
from apolo_node.receive.store import InstanceStore
from apolo_node.web.app import create_app
from apolo_node.web.server import WebServer
from tests.conftest import make_config
from tests.nodes import upgraded_engine
from tests.synthetic import undecodable_capture, write_study

STORED = {"status": "0x0000"}
HOSTILE_ACTOR = "<b>ops</b>"


def unreachable_catalog(tmp_path: Path) -> Engine:
    """An engine whose database cannot be opened (its file is a folder)."""
    (tmp_path / "catalog.sqlite").mkdir()
    return make_engine(f"sqlite:///{tmp_path / 'catalog.sqlite'}")


def stored_so_far() -> float:
    return REGISTRY.get_sample_value("apolo_instances_received_total", STORED) or 0.0


@dataclass
class Site:
    cfg: Config
    url: str
    marker: str
    original_study_uid: str
    study_uid: str  # pseudonymous
    stored: float  # the counter after this site's instances were stored
    refused: float


def serve_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A node's catalog with one study through de-identification (one instance quarantined),
    one refused instance, an outbox row and an audit row carrying planted PHI; served over HTTP."""
    tmp = tmp_path_factory.mktemp("web")
    cfg = make_config(tmp, deid={"processes": 1})
    engine = upgraded_engine(cfg)
    spool = Spool(cfg.spool_root)
    store = InstanceStore(spool, engine, mapper(cfg))
    study = write_study(tmp / "in", series=1, per_series=3)
    [marker] = study.markers
    undecodable_capture(dcmread(study.files[0])).save_as(study.files[0])
    before = stored_so_far()
    for f in study.files:
        assert store.store(f.read_bytes()).ok
    assert not store.store(b"\x00" * 200).ok  # not DICOM: refused with a failure status
    stored = stored_so_far()
    assert stored - before == 3
    refused = sum(
        s.value for fam in REGISTRY.collect() if fam.name == "apolo_instances_received"
        for s in fam.samples if s.name.endswith("_total") and s.labels["status"] != "0x0000"
    )
    [uid] = queue_stable_studies(engine, stable_after=0.0)
    assert deidentify.run_once(cfg, engine, spool, Deidentifier.from_config(cfg), "test-deid")
    enqueue(engine, uid, "report_sr", "2.25.1234", f"reports/{uid}/2.25.1234.dcm")
    record_audit(engine, actor=HOSTILE_ACTOR, action="ask", detail=f"what about {marker}?", studies=[uid])
    server = WebServer(create_app(cfg, engine=engine, store=store, workers=lambda: []), cfg.web)
    server.start()
    try:
        yield Site(cfg, f"http://127.0.0.1:{server.port}", marker, study.study_uid, uid, stored, refused)
    finally:
        server.stop()
        engine.dispose()


