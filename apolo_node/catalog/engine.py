"""Engines and sessions: SQLite in WAL mode with full fsync by default, PostgreSQL by URL.

SQLite writers take the write lock at BEGIN (``BEGIN IMMEDIATE``), so two threads never deadlock
upgrading a read lock. SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed row
survives the process dying (``kill -9``), and after a power loss the last rows may be missing
from the catalog, but never their files, which are fsynced before the row is written. The node
re-catalogues such files at start (``pipeline.node.reconcile_spool``), so an acknowledged
instance is never lost. This halves the receiver's per-instance commit cost on this machine.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from apolo_node.config import Config, ConfigError


def make_engine(url: str, pool_size: int = 5) -> Engine:
    """An engine for ``url``, tuned for the catalog's durability rules."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigError(f"[catalog] url is not a database URL: {url!r}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed, connect_args={"timeout": 60, "check_same_thread": False}
        )
        _sqlite_tuning(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_size=pool_size, pool_pre_ping=True)
    raise ConfigError(f"[catalog] url must be sqlite:// or postgresql://, got {parsed.drivername}")


def _sqlite_tuning(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def engine_for(cfg: Config) -> Engine:
    """The engine for this configuration's catalog."""
    return make_engine(cfg.catalog_url, cfg.catalog.pool_size)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def has_tables(engine: Engine) -> bool:
    return inspect(engine).has_table("study")
