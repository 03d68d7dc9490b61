"""answers follow up and finding text search in any script (issue 13)

``answer.follows_answer_id``: the earlier answer an ``ask --follow-up`` continues (nullable,
indexed, a foreign key to ``answer``). Plain ADD/DROP COLUMN, not batch mode (see 0004/0007).

Full-text search that finds words of any script, Chinese included, where the English stemmed
index of 0005 sees one unsegmented token: SQLite gets an FTS5 table with the ``trigram``
tokenizer over the same columns (external content, kept in step by triggers like 0005's);
PostgreSQL gets ``pg_trgm`` and a GIN trigram index on the lower-cased text
(``apolo_node.catalog.search.FINDING_TEXT`` must stay the same expression, or the planner
will not use it). Both serve substring matches of 3 characters or more; shorter terms scan.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 14:55:00
"""
from alembic import op
import sqlalchemy as sa
import apolo_node.catalog.models


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

COLUMNS = "label, code_meaning, description, location"
# The same expression as apolo_node.catalog.search.FINDING_TEXT (there table-qualified).
TEXT = (
    "lower(label || ' ' || code_meaning || ' ' || description || ' ' || coalesce(location, ''))"
)
SQLITE_UP = [
    f"CREATE VIRTUAL TABLE finding_trigram USING fts5({COLUMNS}, content='finding', content_rowid='id', "
    "tokenize='trigram')",
    (
        "CREATE TRIGGER finding_trigram_ai AFTER INSERT ON finding BEGIN "
        f"INSERT INTO finding_trigram(rowid, {COLUMNS}) "
        "VALUES (new.id, new.label, new.code_meaning, new.description, new.location); END"
    ),
    (
        "CREATE TRIGGER finding_trigram_ad AFTER DELETE ON finding BEGIN "
        f"INSERT INTO finding_trigram(finding_trigram, rowid, {COLUMNS}) "
        "VALUES ('delete', old.id, old.label, old.code_meaning, old.description, old.location); END"
    ),
    (
        "CREATE TRIGGER finding_trigram_au AFTER UPDATE ON finding BEGIN "
        f"INSERT INTO finding_trigram(finding_trigram, rowid, {COLUMNS}) "
        "VALUES ('delete', old.id, old.label, old.code_meaning, old.description, old.location); "
        f"INSERT INTO finding_trigram(rowid, {COLUMNS}) "
        "VALUES (new.id, new.label, new.code_meaning, new.description, new.location); END"
    ),
    "INSERT INTO finding_trigram(finding_trigram) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS finding_trigram_au",
    "DROP TRIGGER IF EXISTS finding_trigram_ad",
    "DROP TRIGGER IF EXISTS finding_trigram_ai",
    "DROP TABLE IF EXISTS finding_trigram",
]
POSTGRES_UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX ix_finding_trigram ON finding USING gin (({TEXT}) gin_trgm_ops)",
]
POSTGRES_DOWN = ["DROP INDEX IF EXISTS ix_finding_trigram"]  # the extension may serve others: kept


def _dialect() -> str:
    name = op.get_bind().dialect.name
    if name not in ("sqlite", "postgresql"):
        raise RuntimeError(f"0008: catalog dialect must be sqlite or postgresql, got {name!r}")
    return name


def upgrade() -> None:
    name = _dialect()
    if name == "sqlite":  # SQLite adds a column with a reference only in plain SQL
        op.execute("ALTER TABLE answer ADD COLUMN follows_answer_id INTEGER REFERENCES answer(id)")
    else:
        op.add_column("answer", sa.Column("follows_answer_id", sa.Integer(), nullable=True))
        op.create_foreign_key("fk_answer_follows_answer_id", "answer", "answer", ["follows_answer_id"], ["id"])
    op.create_index("ix_answer_follows_answer_id", "answer", ["follows_answer_id"])
    for statement in SQLITE_UP if name == "sqlite" else POSTGRES_UP:
        op.execute(statement)


def downgrade() -> None:
    name = _dialect()
    for statement in SQLITE_DOWN if name == "sqlite" else POSTGRES_DOWN:
        op.execute(statement)
    op.drop_index("ix_answer_follows_answer_id", table_name="answer")
    if name == "postgresql":
        op.drop_constraint("fk_answer_follows_answer_id", "answer", type_="foreignkey")
    op.drop_column("answer", "follows_answer_id")
