"""finding text search

Full-text search over what a finding says (label, code meaning, description, location), for
``apolo-node ask``. SQLite: an FTS5 table with external content (the ``finding`` rows
themselves, no copy of the text) kept in step by triggers, Porter-stemmed. PostgreSQL: a GIN
index on the English ``to_tsvector`` of the same columns; ``apolo_node.catalog.search`` queries
that very expression (``FINDING_TSVECTOR``), or the planner would not use the index.

Plain SQL through ``op.execute``, not batch mode: SQLite's batch mode copies the table, which
would drop the triggers and trip the foreign keys.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 15:06:26.415056
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

COLUMNS = "label, code_meaning, description, location"
# The same expression as apolo_node.catalog.search.FINDING_TSVECTOR (there with table-qualified
# columns), or PostgreSQL will not use the index for the queries.
TSVECTOR = (
    "to_tsvector('english', label || ' ' || code_meaning || ' ' || description || ' ' "
    "|| coalesce(location, ''))"
)

SQLITE_UP = [
    (
        f"CREATE VIRTUAL TABLE finding_fts USING fts5({COLUMNS}, content='finding', "
        "content_rowid='id', tokenize='porter unicode61 remove_diacritics 2')"
    ),
    (
        f"CREATE TRIGGER finding_fts_ai AFTER INSERT ON finding BEGIN "
        f"INSERT INTO finding_fts(rowid, {COLUMNS}) "
        "VALUES (new.id, new.label, new.code_meaning, new.description, new.location); END"
    ),
    (
        f"CREATE TRIGGER finding_fts_ad AFTER DELETE ON finding BEGIN "
        f"INSERT INTO finding_fts(finding_fts, rowid, {COLUMNS}) "
        "VALUES ('delete', old.id, old.label, old.code_meaning, old.description, old.location); END"
    ),
    (
        f"CREATE TRIGGER finding_fts_au AFTER UPDATE ON finding BEGIN "
        f"INSERT INTO finding_fts(finding_fts, rowid, {COLUMNS}) "
        "VALUES ('delete', old.id, old.label, old.code_meaning, old.description, old.location); "
        f"INSERT INTO finding_fts(rowid, {COLUMNS}) "
        "VALUES (new.id, new.label, new.code_meaning, new.description, new.location); END"
    ),
    "INSERT INTO finding_fts(finding_fts) VALUES ('rebuild')",  # the findings already there
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS finding_fts_au",
    "DROP TRIGGER IF EXISTS finding_fts_ad",
    "DROP TRIGGER IF EXISTS finding_fts_ai",
    "DROP TABLE IF EXISTS finding_fts",
]
POSTGRES_UP = [f"CREATE INDEX ix_finding_fts ON finding USING gin ({TSVECTOR})"]
POSTGRES_DOWN = ["DROP INDEX IF EXISTS ix_finding_fts"]


def _run(sqlite: list[str], postgres: list[str]) -> None:
    name = op.get_bind().dialect.name
    if name == "sqlite":
        statements = sqlite
    elif name == "postgresql":
        statements = postgres
    else:
        raise RuntimeError(f"finding text search: catalog dialect must be sqlite or postgresql, got {name!r}")
    for statement in statements:
        op.execute(statement)


def upgrade() -> None:
    _run(SQLITE_UP, POSTGRES_UP)


def downgrade() -> None:
    _run(SQLITE_DOWN, POSTGRES_DOWN)
