"""OHIF v3 on the node's DICOMweb: a study sent by STOW-RS, reported by the node, opened in OHIF
(../shared/tools/viewer/: serve_ohif.js, app-config.js, ohif_sr_shot.js) in headless Chromium,
which must draw the TID 1500 SR's boxes on the de-identified images.

Slow (about 30 s): runs with APOLO_TEST_SLOW=1, and needs node, Chromium, playwright-core and
the OHIF dist in /tmp/apolo-viewer-cache (what check_viewer.sh installs on first use); skipped
with the reason otherwise. test_dicomweb.py covers the same routes fast, with dicomweb-client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient
from fastapi import APIRouter, FastAPI
from pydicom.uid import generate_uid

from apolo_node.catalog.records import list_studies
from apolo_node.web.app import create_app
from apolo_node.web.dicomweb import router
from tests.conftest import make_config
from tests.nodes import running_node
from tests.peers import LOCALHOST, free_port, port_open, wait_until
from tests.synthetic import new_marker, phantom_ct
from tests.test_dicomweb import serving

VIEWER = Path(__file__).resolve().parents[2] / "shared" / "tools" / "viewer"
CACHE = Path(os.environ.get("VIEWER_CACHE", "/tmp/apolo-viewer-cache"))
OHIF_PATH = "/dicom-web"  # where serve_ohif.js proxies DICOMweb, and app-config.js looks


def missing() -> str | None:
    if os.environ.get("APOLO_TEST_SLOW") != "1":
        return "slow (about 30 s): set APOLO_TEST_SLOW=1"
    if shutil.which("node") is None or not Path("/usr/bin/chromium").exists():
        return "needs node and /usr/bin/chromium"
    if not (VIEWER / "ohif_sr_shot.js").is_file():
        return f"no viewer tools at {VIEWER}"
    if not (CACHE / "ohif" / "dist" / "index.html").is_file() or not (CACHE / "node" / "node_modules" / "playwright-core").is_dir():
        return f"no OHIF dist or playwright-core under {CACHE} (run ../shared/tools/viewer/check_viewer.sh once)"
    return None


def as_ohif_expects(app: FastAPI) -> FastAPI:
    """The DICOMweb routes also under /dicom-web, the path serve_ohif.js forwards unchanged."""
    alias = APIRouter(prefix=OHIF_PATH)
    for route in router.routes:
        alias.add_api_route(
            route.path.removeprefix(router.prefix), route.endpoint,  # type: ignore[attr-defined]
            methods=list(route.methods), dependencies=router.dependencies,  # type: ignore[attr-defined]
        )
    app.include_router(alias)
    return app


@pytest.mark.slow
@pytest.mark.skipif(missing() is not None, reason=missing() or "")
def test_ohif_draws_the_sr_of_a_study_sent_by_stow(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    marker = new_marker()
    study, series = generate_uid(), generate_uid()
    slices = [phantom_ct(study_uid=study, series_uid=series, number=n, marker=marker) for n in range(1, 6)]
    with running_node(cfg) as node:
        app = as_ohif_expects(create_app(cfg, engine=node.engine, store=node.store))
        with serving(app) as base:
            DICOMwebClient(url=f"{base}/dicomweb").store_instances(slices)
            wait_until(lambda: [s.status for s in list_studies(node.engine)] == ["reported"],
                       what="the STOW-RS study reported", timeout=90, interval=0.2)
            port = free_port()
            with open(tmp_path / "serve_ohif.log", "w") as log:
                proxy = subprocess.Popen(
                    ["node", str(VIEWER / "serve_ohif.js"), str(CACHE / "ohif" / "dist"),
                     str(VIEWER / "app-config.js"), str(port), base],
                    stdout=log, stderr=subprocess.STDOUT,
                )
            try:
                wait_until(lambda: port_open(port), what="serve_ohif.js", timeout=20, proc=proxy)
                shot = subprocess.run(
                    ["node", str(VIEWER / "ohif_sr_shot.js"), f"http://{LOCALHOST}:{port}",
                     str(tmp_path / "sr.png"), str(tmp_path / "list.png")],
                    env={**os.environ, "NODE_PATH": str(CACHE / "node" / "node_modules")},
                    capture_output=True, text=True, timeout=180,
                )
            finally:
                proxy.terminate()
                proxy.wait(timeout=10)
    assert shot.returncode == 0, shot.stdout[-3000:] + shot.stderr[-2000:]  # 3: opened, nothing drawn
    assert "shapes drawn by OHIF" in shot.stdout and (tmp_path / "sr.png").stat().st_size > 10_000
    assert marker not in shot.stdout
