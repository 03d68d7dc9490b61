"""Retrieval through the running node (``POST /reasoning/retrieve``), else in this process.

A one-shot ``apolo-node ask`` would spend seconds importing and loading the embedding model
and reading the stored vectors; ``serve`` has them loaded. ``NodeRetriever`` asks the node
over loopback HTTP and builds the evidence from the catalog by tracking UID; when no node
answers (not running, other catalog, an error), it retrieves in-process as before. The
question it sends is the one ``ask`` searches with (identifiers already replaced).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path

from sqlalchemy import Engine

from apolo_node.catalog import search
from apolo_node.catalog.search import Filters
from apolo_node.config import Config
from apolo_node.logs import event, get_logger
from apolo_node.reasoning.evidence import Evidence
from apolo_node.reasoning.phrases import language
from apolo_node.reasoning.retrieval import Retrieved, Retriever

log = get_logger("reasoning.remote")
TIMEOUT = 10.0  # seconds for the node's answer (a first question loads its model)
BODY_MAX = 10_000_000  # bytes of an answer read at most
LOOPBACK = {"127.0.0.1", "::1", "localhost", "0.0.0.0", "::"}


def node_url(cfg: Config) -> str | None:
    """The retrieval URL of this configuration's node on this machine, or None (no plain-HTTP web side)."""
    web = cfg.web
    if not web.enabled or web.tls_cert or web.host not in LOOPBACK:
        return None
    host = "[::1]" if web.host in ("::1", "::") else "127.0.0.1"
    return f"http://{host}:{web.port}/reasoning/retrieve"


def _token(cfg: Config) -> str:
    if cfg.web.token:
        return cfg.web.token
    if cfg.web.token_file:
        try:
            return Path(cfg.web.token_file).expanduser().read_text().strip()
        except OSError:
            return ""
    return ""


def filters_json(filters: Filters) -> dict[str, object]:
    """The filters as the node's endpoint reads them (``web.reasoning.filters_from_json``)."""
    body = {k: v for k, v in filters.as_json().items() if k != "studies"}
    if filters.studies is not None:
        body["studies"] = list(filters.studies)
    return body


class NodeRetriever(Retriever):
    """A ``Retriever`` that asks the running node first and retrieves in-process when it cannot."""

    def __init__(self, engine: Engine, cfg: Config, *, url: str | None = None) -> None:
        super().__init__(engine, limit=cfg.reasoning.evidence)
        self.cfg = cfg
        self.url = url if url is not None else node_url(cfg)
        self.local: dict[str, Retriever] = {}
        self.via = ""  # "node" or "process": where the last question was answered

    def retrieve(self, question: str, filters: Filters) -> Retrieved:
        """The node's evidence for the question; this process's when the node does not answer."""
        if self.url:
            try:
                found = self._ask_node(question, filters)
                self.via = "node"
                return found
            except (OSError, ValueError, KeyError, TypeError) as exc:  # URLError and HTTPError are OSErrors
                event(log, "reasoning.remote.unavailable", logging.DEBUG, error_type=type(exc).__name__)
        self.via = "process"
        lang = language(question)
        if lang not in self.local:
            self.local[lang] = Retriever.from_settings(self.engine, self.cfg.reasoning, lang)
        return self.local[lang].retrieve(question, filters)

    def _ask_node(self, question: str, filters: Filters) -> Retrieved:
        started = time.perf_counter()
        assert self.url is not None
        request = urllib.request.Request(
            self.url, data=json.dumps({"question": question, "filters": filters_json(filters)}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        token = _token(self.cfg)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:  # noqa: S310 - our own loopback URL
            body = json.loads(reply.read(BODY_MAX))
        ranked = [(str(uid), float(score)) for uid, score in body["evidence"]][: self.limit]
        hits = search.findings_by_tracking_uid(self.engine, [uid for uid, _ in ranked])
        if len(hits) != len(ranked):  # the node reads another catalog
            raise ValueError("the node's evidence is not in this catalog")
        evidence = tuple(Evidence.from_hit(h, s) for h, (_, s) in zip(hits, ranked))
        return Retrieved(evidence, str(body["mode"]), int(body["candidates"]),
                         time.perf_counter() - started, str(body.get("note", "")))
