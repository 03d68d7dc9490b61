"""The status page as a person sees it: headless Chromium loads it, the text is asserted, and
a screenshot is kept in the test's tmp path.

Needs Debian's chromium and playwright-core in /tmp/apolo-viewer-cache/node (what
../shared/tools/viewer/check_viewer.sh installs on first use); skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web_site import Site, serve_site

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("VIEWER_CACHE", "/tmp/apolo-viewer-cache"))
MODULES = CACHE / "node" / "node_modules"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    yield from serve_site(tmp_path_factory)


def browser_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if not (MODULES / "playwright-core").is_dir():
        return f"no playwright-core under {MODULES} (run ../shared/tools/viewer/check_viewer.sh once)"
    return None


def shoot(url: str, out: Path, authorization: str | None = None) -> dict[str, object]:
    """What Chromium shows at ``url``; the screenshot goes to ``out``."""
    done = subprocess.run(
        ["node", str(HERE / "web_page_shot.js"), url, str(out), *([authorization] if authorization else [])],
        env={**os.environ, "NODE_PATH": str(MODULES), "CHROMIUM": CHROMIUM},
        capture_output=True, text=True, timeout=90,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_chromium_shows_the_status_page(site: Site, tmp_path: Path) -> None:
    shot = tmp_path / "status.png"
    seen = shoot(f"{site.url}/", shot)
    assert seen["status"] == 200 and seen["title"] == "apolo-node status" and seen["errors"] == []
    text = str(seen["text"])
    assert site.study_uid in text and "deidentified" in text
    assert "Quarantine (1)" in text and "burned-in text scan failed" in text
    assert "<b>ops</b>" in text  # shown as text, not taken as markup
    assert site.marker not in text
    assert shot.stat().st_size > 10_000  # a real rendering, not a blank page
    print(f"screenshot: {shot}")


