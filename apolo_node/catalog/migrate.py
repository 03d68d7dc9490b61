"""Schema changes through Alembic only: upgrade to head, and the check ``serve`` runs first."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


class SchemaError(RuntimeError):
    """The catalog is not at the schema this code needs."""


def alembic_config(url: str) -> AlembicConfig:
    if not (MIGRATIONS / "env.py").exists():
        raise SchemaError(
            f"migrations folder {MIGRATIONS} not found: install apolo-node from its checkout "
            "(pip install -e .)"
        )
    acfg = AlembicConfig()
    acfg.set_main_option("script_location", str(MIGRATIONS))
    acfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return acfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the catalog to ``revision`` (default: newest), creating it if empty."""
    acfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        acfg.attributes["connection"] = conn
        command.upgrade(acfg, revision)


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def require_head(engine: Engine) -> None:
    """Refuse to run on a catalog that is missing or behind; say what to run."""
    have, want = current(engine), head()
    if have != want:
        raise SchemaError(
            f"catalog schema is at {have or 'nothing (empty catalog)'}, this code needs {want}: "
            "run `apolo-node db upgrade`"
        )
