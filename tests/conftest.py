"""Shared fixtures: configurations on temporary spools, catalogs on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from apolo_node import config as config_mod
from apolo_node.catalog.engine import make_engine
from apolo_node.catalog.migrate import upgrade
from apolo_node.config import Config
from tests.peer_fixtures import (  # noqa: F401  (fixtures)
    need_dcmtk,
    need_orthanc,
    orthanc,
    postgres_cluster,
    postgres_url,
    storescp,
)
from tests.peers import free_port


def make_config(tmp_path: Path, **tables: dict[str, object]) -> Config:
    """A configuration on a fresh spool under tmp_path, a random key and free ports."""
    base = config_mod.load(Path(__file__).resolve().parents[1] / "config" / "apolo.toml", env={})
    cfg = config_mod.replace(
        base,
        spool={"root": str(tmp_path / "spool")},
        deid={"key": secrets.token_hex(16)},
        receive={"port": free_port(), "stable_after": 1.0, "drain_timeout": 5.0},
        worker={"poll_interval": 0.2},
        web={"port": free_port()},
    )
    return config_mod.replace(cfg, **tables) if tables else cfg


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return make_config(tmp_path)


def fresh_postgres_database(admin_url: str) -> str:
    """A new empty database in the test cluster; its URL."""
    name = f"t_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty catalog database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return fresh_postgres_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(catalog_url: str) -> Iterator[Engine]:
    """A catalog at the newest schema, on each backend."""
    eng = make_engine(catalog_url)
    upgrade(eng)
    yield eng
    eng.dispose()
