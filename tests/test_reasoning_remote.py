"""ask's retrieval through the running node's endpoint (issue 13 item 7), and without one."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from apolo_node.catalog.search import Filters
from apolo_node.config import Config
from apolo_node.reasoning.ask import ask
from apolo_node.reasoning.extractive import ExtractiveAnswerer
from apolo_node.reasoning.remote import NodeRetriever, node_url
from apolo_node.reasoning.retrieval import Retriever
from apolo_node.web.app import create_app
from apolo_node.web.server import WebServer
from tests.conftest import make_config
from tests.peers import free_port
from tests.nodes import upgraded_engine
from tests.test_reasoning_retrieval import three_studies

TOKEN = "node-token-for-tests"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Config, Engine, str]]:
    """A catalog of three studies, served with text retrieval and a token: (config, engine, URL)."""
    cfg = make_config(tmp_path, reasoning={"semantic": False}, web={"token": TOKEN})
    engine = upgraded_engine(cfg)
    three_studies(engine)
    server = WebServer(create_app(cfg, engine=engine, workers=lambda: []), cfg.web)
    server.start()
    try:
        yield cfg, engine, f"http://127.0.0.1:{server.port}/reasoning/retrieve"
    finally:
        server.stop()
        engine.dispose()


def labels(found: object) -> list[str]:
    return [e.finding.label for e in found.evidence]  # type: ignore[attr-defined]


def test_ask_retrieves_through_the_node_with_the_same_evidence_as_in_process(
    node: tuple[Config, Engine, str],
) -> None:
    cfg, engine, url = node
    assert node_url(cfg) == f"http://127.0.0.1:{cfg.web.port}/reasoning/retrieve"
    remote = NodeRetriever(engine, cfg, url=url)
    filters = Filters(body_part="CHEST")
    found = remote.retrieve("pleural effusion or pneumothorax", filters)
    assert remote.via == "node"
    local = Retriever.from_settings(engine, cfg.reasoning).retrieve("pleural effusion or pneumothorax", filters)
    assert labels(found) == labels(local) and found.mode == local.mode
    assert [e.score for e in found.evidence] == pytest.approx([e.score for e in local.evidence])
    answered = ask(engine, cfg.reasoning, "Is there a pneumothorax?", Filters(), answerer=ExtractiveAnswerer(),
                   retriever=remote, actor="test")
    assert remote.via == "node" and answered.retrieved.evidence[0].finding.label == "Pneumothorax"


def test_without_a_node_or_its_token_ask_retrieves_in_process(node: tuple[Config, Engine, str]) -> None:
    cfg, engine, url = node
    down = NodeRetriever(engine, cfg, url=f"http://127.0.0.1:{free_port()}/reasoning/retrieve")
    assert labels(down.retrieve("pleural effusion", Filters())) == ["Pleural effusion"]
    assert down.via == "process"
    stranger = NodeRetriever(engine, make_config(Path(cfg.spool_root), reasoning={"semantic": False}), url=url)
    assert labels(stranger.retrieve("pleural effusion", Filters())) == ["Pleural effusion"]
    assert stranger.via == "process"  # 401 without the token: answered here instead


def test_the_endpoint_refuses_bad_filters_without_echoing_them(node: tuple[Config, Engine, str]) -> None:
    _, _, url = node
    for body in ({"question": "nodule", "filters": {"since": "PLANTED-2024"}},
                 {"question": "nodule", "filters": {"patient": "PLANTED"}},
                 {"question": "", "filters": {}}):
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 422
        assert "PLANTED" not in refused.value.read().decode()
    request = urllib.request.Request(url, data=json.dumps({"question": "nodule", "filters": {"modality": "CT"}}).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert [e[0] for e in json.loads(reply.read())["evidence"]] == ["2.25.101.9.1"]
