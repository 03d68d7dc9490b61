"""pytest fixtures for the real peers of tests/peers.py; import them from conftest.py.

A peer that is not installed skips its tests with the package to install, except under
``CI=true``, where it fails them: CI must install every peer, and a skip there would hide it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import (
    PACKAGES,
    Orthanc,
    PostgresCluster,
    Storescp,
    dcmtk_available,
    orthanc_available,
    postgres_bin_dir,
)


def require_peer(name: str, available: bool) -> None:
    """Skip (or, under CI=true, fail) the test when peer ``name`` is not installed."""
    if available:
        return
    reason = f"{name} is not installed on this machine; install the Debian package {PACKAGES[name]}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


TOOLS = {"dciodvfy": "dicom3tools", "dsrdump": "dcmtk", "dcmdump": "dcmtk", "dcmcjpeg": "dcmtk", "dcmpschk": "dcmtk"}


def need_tool(name: str) -> str:
    """The path of a validation tool; skip without it (fail under CI=true)."""
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} is not installed on this machine; install the Debian package {TOOLS.get(name, name)}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines dciodvfy (dicom3tools) reports as errors for a DICOM file."""
    run = subprocess.run([need_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture
def need_dcmtk() -> None:
    """Skip (fail under CI) unless dcmtk's storescu, storescp and echoscu are installed."""
    require_peer("dcmtk", dcmtk_available())


@pytest.fixture
def need_orthanc() -> None:
    """Skip (fail under CI) unless Orthanc is installed."""
    require_peer("orthanc", orthanc_available())


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session (fresh folder under the system temp dir)."""
    require_peer("postgresql", postgres_bin_dir() is not None)
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """SQLAlchemy URL of an empty database in the session's PostgreSQL cluster."""
    return postgres_cluster.url


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Storescp]:
    """A dcmtk storescp (AE STORESCP) writing into tmp_path/storescp, on a free port."""
    require_peer("dcmtk", dcmtk_available())
    with Storescp(tmp_path / "storescp") as scp:
        yield scp


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """An Orthanc (AE ORTHANC) in tmp_path/orthanc with no modalities configured.

    Declare one inside the test with ``orthanc.add_modality("APOLO", "APOLO", "127.0.0.1", port)``
    once its port is known.
    """
    require_peer("orthanc", orthanc_available())
    with Orthanc(tmp_path / "orthanc") as server:
        yield server
