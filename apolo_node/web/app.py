"""The ASGI app of the HTTP side: ``create_app(cfg)``, served by ``web/server.py`` inside serve.

Paths are a contract: ``/`` the status page, ``/healthz``, ``/readyz``, ``/metrics``, and
DICOMweb under ``/dicomweb`` (``web/dicomweb.py``). Only ``/healthz`` and ``/metrics`` are open
to anyone who can connect; the rest depends on ``require_access`` (``web/auth.py``).

What routes find on ``request.app.state``: ``cfg`` (Config), ``engine`` (the catalog),
``spool`` (Spool), ``store`` (the InstanceStore that C-STORE also uses, so STOW-RS keeps the same
rules), ``access`` (auth.Access).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy import Engine

from apolo_node.catalog.engine import engine_for
from apolo_node.catalog.overview import ping
from apolo_node.config import Config
from apolo_node.pseudonym import mapper
from apolo_node.spool import Spool
from apolo_node.receive.store import InstanceStore, Limits
from apolo_node.web import metrics as web_metrics
from apolo_node.web import reasoning as web_reasoning
from apolo_node.web import status_page
from apolo_node.web.auth import Access, require_access

# () -> the names of workers that should run and do not; None where no worker runs in-process
WorkerCheck = Callable[[], list[str]]


def create_app(
    cfg: Config,
    *,
    engine: Engine | None = None,
    store: InstanceStore | None = None,
    workers: WorkerCheck | None = None,
) -> FastAPI:
    """The app for one configuration; serve passes its own engine, store and worker check.

    Raises ConfigError for an access rule that is not safe (beyond loopback with no credential).
    """
    access = Access.from_settings(cfg.web)
    owned = engine is None
    engine = engine if engine is not None else engine_for(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            engine.dispose()

    app = FastAPI(
        title="apolo-node", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    spool = store.spool if store is not None else Spool(cfg.spool_root)
    app.state.cfg = cfg
    app.state.engine = engine
    app.state.spool = spool
    app.state.store = store or InstanceStore(
        spool, engine, mapper(cfg), Limits.from_settings(cfg.receive)
    )
    app.state.access = access
    app.state.workers = workers

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        """The process is alive and answers HTTP."""
        return "ok\n"

    @app.get("/readyz", dependencies=[Depends(require_access)])
    def readyz(request: Request) -> JSONResponse:
        """Ready for work: the catalog answers, the spool takes a file, the workers run."""
        checks = readiness(request.app)
        failed = [name for name, result in checks.items() if result != "ok"]
        body: dict[str, Any] = {"ready": not failed, "failed": failed, "checks": checks}
        return JSONResponse(body, status_code=503 if failed else 200)

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus text format: this process's counters and the catalog's counts."""
        return Response(web_metrics.exposition(engine), media_type=web_metrics.CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, dependencies=[Depends(require_access)])
    def status(request: Request) -> HTMLResponse:
        """The status page for people: studies, quarantine, outbox, recent audit entries."""
        return HTMLResponse(status_page.render(engine, workers))

    if importlib.util.find_spec("apolo_node.web.dicomweb") is not None:
        # DICOMweb (issue 14) lives in web/dicomweb.py; until that file lands, the app has none.
        # Looked up rather than caught as an ImportError, so that a broken import still fails.
        from apolo_node.web import dicomweb

        app.include_router(dicomweb.router)
    app.include_router(web_reasoning.router)  # ask through the node's loaded model (issue 13 item 7)
    return app


def readiness(app: FastAPI) -> dict[str, str]:
    """Each check's result: ``ok``, or why not (an error's kind, a worker's name; never a value)."""
    checks: dict[str, str] = {}
    try:
        ping(app.state.engine)
        checks["catalog"] = "ok"
    except Exception as exc:
        checks["catalog"] = f"unreachable ({type(exc).__name__})"
    spool: Spool = app.state.spool
    try:
        spool.discard(spool.stage(b""))
        checks["spool"] = "ok"
    except OSError as exc:
        checks["spool"] = f"not writable ({type(exc).__name__})"
    if app.state.workers is not None:
        dead = app.state.workers()
        checks["workers"] = "ok" if not dead else "stopped: " + ", ".join(sorted(dead))
    return checks
