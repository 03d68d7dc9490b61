"""Alembic environment: runs on the connection apolo-node hands it, or on sqlalchemy.url."""

from alembic import context
from sqlalchemy import pool

from apolo_node.catalog.engine import make_engine
from apolo_node.catalog.models import Base

target_metadata = Base.metadata
config = context.config


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave the full-text index of findings (migration 0005, not a model) out of autogenerate."""
    if type_ == "table" and name and name.startswith("finding_fts"):
        return False
    return not (type_ == "index" and name == "ix_finding_fts")


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True, include_name=include_name)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True,
                          include_name=include_name)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run()
