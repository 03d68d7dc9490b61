"""The HTTP side of serve against a real uvicorn on 127.0.0.1: health, readiness, metrics in
Prometheus format, the status page, access control, and no planted PHI on any page."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from prometheus_client.parser import text_string_to_metric_families

from apolo_node.catalog.engine import make_engine
from apolo_node.catalog.records import list_studies
from apolo_node.config import ConfigError
from apolo_node.spool import Spool
from apolo_node.web.app import create_app
from apolo_node.web.auth import require_access
from apolo_node.web.server import WebServer, bind
from tests.conftest import make_config
from tests.nodes import upgraded_engine
from tests.peers import wait_until
from tests.web_site import HOSTILE_ACTOR, Site, serve_site, unreachable_catalog

OPEN_PATHS = {"/healthz", "/metrics"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from serve_site(tmp_path_factory)


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus-client's own parser."""
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(r.text) for s in fam.samples
    }


def test_health_and_readiness(site: Site) -> None:
    r = httpx.get(f"{site.url}/healthz")
    assert (r.status_code, r.text) == (200, "ok\n")
    r = httpx.get(f"{site.url}/readyz")
    assert r.status_code == 200
    assert r.json() == {
        "ready": True, "failed": [], "checks": {"catalog": "ok", "spool": "ok", "workers": "ok"}
    }


def test_readiness_names_each_failing_check(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    broken = unreachable_catalog(tmp_path)
    app = create_app(cfg, engine=broken, workers=lambda: ["vision-worker", "deid-worker"])
    spool: Spool = app.state.spool
    spool.tmp.rmdir()
    spool.tmp.write_bytes(b"")  # a file where the spool's tmp/ folder should be
    server = WebServer(app, cfg.web)
    server.start()
    try:
        r = httpx.get(f"http://127.0.0.1:{server.port}/readyz")
        # alive, but not ready: /healthz still answers
        assert httpx.get(f"http://127.0.0.1:{server.port}/healthz").status_code == 200
    finally:
        server.stop()
        broken.dispose()
    assert r.status_code == 503
    body = r.json()
    assert body["ready"] is False and body["failed"] == ["catalog", "spool", "workers"]
    assert body["checks"]["catalog"] == "unreachable (OperationalError)"
    assert body["checks"]["spool"].startswith("not writable (")
    assert body["checks"]["workers"] == "stopped: deid-worker, vision-worker"


def test_metrics_count_what_happened(site: Site) -> None:
    m = metrics(site.url)
    assert m[("apolo_instances_received_total", (("status", "0x0000"),))] == site.stored
    assert sum(
        v for (name, labels), v in m.items()
        if name == "apolo_instances_received_total" and dict(labels)["status"] != "0x0000"
    ) == site.refused >= 1
    assert m[("apolo_catalog_up", ())] == 1
    assert m[("apolo_quarantined_instances", ())] == 1
    assert m[("apolo_instances", (("state", "clean"),))] == 2
    assert m[("apolo_studies", (("status", "deidentified"),))] == 1
    assert m[("apolo_queue_depth", (("stage", "deidentify"),))] == 0
    assert m[("apolo_queue_depth", (("stage", "describe"),))] == 1  # the study waits for the model
    assert m[("apolo_queue_depth", (("stage", "send"),))] == 1
    assert m[("apolo_outbox", (("state", "pending"),))] == 1
    assert m[("apolo_outbox", (("state", "failed"),))] == 0
    assert m[("apolo_stage_seconds_count", (("stage", "deidentify"),))] >= 1


def test_metrics_say_when_the_catalog_is_down(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    broken = unreachable_catalog(tmp_path)
    server = WebServer(create_app(cfg, engine=broken), cfg.web)
    server.start()
    try:
        m = metrics(f"http://127.0.0.1:{server.port}")
    finally:
        server.stop()
        broken.dispose()
    assert m[("apolo_catalog_up", ())] == 0
    assert not [k for k in m if k[0] == "apolo_queue_depth"]


def test_the_status_page_shows_studies_quarantine_outbox_and_audit(site: Site) -> None:
    r = httpx.get(f"{site.url}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert site.study_uid in page and "deidentified" in page
    assert "burned-in text scan failed" in page  # the quarantine's reason
    assert "2.25.1234" in page and "report_sr" in page  # the outbox row
    assert "&lt;b&gt;ops&lt;/b&gt;" in page and HOSTILE_ACTOR not in page  # escaped, not markup
    assert "Workers:" in page and "all running" in page


def test_no_planted_phi_on_any_page(site: Site) -> None:
    for path in ("/", "/healthz", "/readyz", "/metrics"):
        text = httpx.get(f"{site.url}{path}").text
        assert site.marker not in text, path
        assert site.original_study_uid not in text, path


def _requires_access(dependant: Dependant) -> bool:
    return dependant.call is require_access or any(_requires_access(d) for d in dependant.dependencies)


def test_every_route_but_health_and_metrics_requires_access(site: Site) -> None:
    app: FastAPI = create_app(site.cfg)
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert {"/", "/healthz", "/readyz", "/metrics"} <= {r.path for r in routes}
    for route in routes:
        if route.path in OPEN_PATHS:
            assert not _requires_access(route.dependant), route.path
        else:
            assert _requires_access(route.dependant), f"{route.path} is open to anyone who connects"


def test_a_token_guards_everything_but_health_and_metrics(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, web={"token": "s3cret-token"})
    upgraded_engine(cfg).dispose()
    server = WebServer(create_app(cfg), cfg.web)
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        refused = httpx.get(f"{url}/")
        wrong = httpx.get(f"{url}/", headers={"Authorization": "Bearer not-it"})
        bearer = httpx.get(f"{url}/", headers={"Authorization": "Bearer s3cret-token"})
        basic = httpx.get(f"{url}/", auth=("anyone", "s3cret-token"))
        open_ = [httpx.get(f"{url}{p}").status_code for p in sorted(OPEN_PATHS)]
        guarded = [httpx.get(f"{url}{p}").status_code for p in ("/readyz", "/dicomweb/studies")]
    finally:
        server.stop()
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
    assert "s3cret" not in refused.text and "[web] token" in refused.json()["detail"]
    assert wrong.status_code == 401
    assert bearer.status_code == 200 and basic.status_code == 200
    assert open_ == [200, 200] and guarded == [401, 401]


def test_beyond_loopback_without_a_credential_the_app_is_refused(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, web={"host": "0.0.0.0"})
    with pytest.raises(ConfigError, match=r"\[web\] host '0.0.0.0' is beyond loopback"):
        create_app(cfg)


def test_a_port_already_taken_is_refused_by_name(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    held = bind(cfg.web)
    try:
        with pytest.raises(ConfigError, match=rf"\[web\] port {cfg.web.port} on 127.0.0.1 cannot be listened on"):
            bind(cfg.web)
    finally:
        held.close()
    bind(cfg.web).close()  # free again: taken


def test_studies_of_the_page_are_the_catalogs(site: Site) -> None:
    """The page and `apolo-node studies` agree on what is there."""
    engine = make_engine(site.cfg.catalog_url)
    try:
        [summary] = list_studies(engine)
    finally:
        engine.dispose()
    assert summary.study_uid == site.study_uid




def test_connections_past_max_connections_are_answered_503(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, web={"max_connections": 2})
    upgraded_engine(cfg).dispose()
    server = WebServer(create_app(cfg), cfg.web)
    server.start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    try:
        wait_until(lambda: httpx.get(url).status_code == 503, what="the third connection refused", timeout=5)
        idle.pop().close()
        wait_until(lambda: httpx.get(url).status_code == 200, what="a free slot again", timeout=5)
    finally:
        for s in idle:
            s.close()
        server.stop()
