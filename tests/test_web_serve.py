"""``apolo-node serve`` with its HTTP side: a real study over C-STORE shows in /metrics and on the
status page, SIGTERM stops both sides; an unsafe or taken [web] binding stops serve by name."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from apolo_node.cli import app
from apolo_node.config import Config
from apolo_node.web.server import bind
from tests.conftest import make_config
from tests.nodes import ServeProcess, config_env, upgraded_engine
from tests.peers import port_open, storescu, wait_until
from tests.synthetic import write_study

SLOW = os.environ.get("APOLO_TEST_SLOW") == "1"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text) for s in fam.samples
    }


@pytest.mark.usefixtures("need_dcmtk")
def test_serve_counts_a_sent_study_lists_it_and_stops_both_sides_on_sigterm(
    cfg: Config, tmp_path: Path
) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=3)
    url = f"http://127.0.0.1:{cfg.web.port}"
    with ServeProcess(cfg, tmp_path / "serve.log") as node:
        assert httpx.get(f"{url}/healthz").status_code == 200  # up before the SCP listens
        storescu(study.files, cfg.receive.port)
        m = samples(httpx.get(f"{url}/metrics").text)  # acknowledged, so already counted
        wait_until(
            lambda: re.search(r"\b2\.25\.\d+\b", httpx.get(f"{url}/").text) is not None,
            what="the status page to list the study", timeout=30, interval=0.2,
        )
        page = httpx.get(f"{url}/").text
        ready = httpx.get(f"{url}/readyz")
        assert node.terminate() == 0
    assert not port_open(cfg.web.port) and not port_open(cfg.receive.port)
    assert m[("apolo_instances_received_total", (("status", "0x0000"),))] == 3  # exactly what we sent
    assert sum(v for (name, _), v in m.items() if name == "apolo_studies") == 1
    assert study.markers[0] not in page and study.study_uid not in page
    assert ready.status_code == 200 and ready.json()["checks"]["workers"] == "ok"


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="the whole pipeline under serve: set APOLO_TEST_SLOW=1")
@pytest.mark.usefixtures("need_dcmtk")
def test_serve_times_each_stage_and_the_model_as_a_study_is_reported(cfg: Config, tmp_path: Path) -> None:
    study = write_study(tmp_path / "in", series=1, per_series=3)
    url = f"http://127.0.0.1:{cfg.web.port}"
    with ServeProcess(cfg, tmp_path / "serve.log") as node:
        storescu(study.files, cfg.receive.port)
        wait_until(
            lambda: "reported" in httpx.get(f"{url}/").text,
            what="the status page to list the study as reported", timeout=90, interval=0.3,
        )
        m = samples(httpx.get(f"{url}/metrics").text)
        assert node.terminate() == 0
    assert m[("apolo_studies", (("status", "reported"),))] == 1
    for stage in ("deidentify", "describe"):
        assert m[("apolo_stage_seconds_count", (("stage", stage),))] >= 1
    assert m[("apolo_model_call_seconds_count", (("stage", "vision"),))] >= 1


def serve_in_process(cfg: Config) -> tuple[int, str]:
    """``apolo-node serve`` in this process (it fails before it would wait for a signal)."""
    env = {k: v for k, v in config_env(cfg).items() if k.startswith("APOLO_")}
    result = CliRunner().invoke(app, ["serve"], env=env)
    return result.exit_code, result.output


def test_serve_refuses_a_web_port_already_taken(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    upgraded_engine(cfg).dispose()
    held = bind(cfg.web)
    try:
        code, output = serve_in_process(cfg)
    finally:
        held.close()
    assert code == 2
    assert f"[web] port {cfg.web.port} on 127.0.0.1 cannot be listened on" in output
    assert "choose another [web] port, or set [web] enabled = false" in output
    assert not port_open(cfg.receive.port)  # it stopped before the SCP listened


def test_serve_refuses_to_listen_beyond_loopback_without_a_credential(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, web={"host": "0.0.0.0"})
    upgraded_engine(cfg).dispose()
    code, output = serve_in_process(cfg)
    assert code == 2 and "[web] host '0.0.0.0' is beyond loopback: set [web] token" in output


def test_serve_without_the_web_side(tmp_path: Path) -> None:
    """[web] enabled = false: nothing listens on the web port (a taken port is no obstacle)."""
    from apolo_node.pipeline.node import Node

    cfg = make_config(tmp_path, web={"enabled": False})
    upgraded_engine(cfg).dispose()
    held = bind(cfg.web)
    try:
        node = Node(cfg)
        node.start()
        try:
            assert node.web is None and port_open(cfg.receive.port)
        finally:
            node.stop()
    finally:
        held.close()
