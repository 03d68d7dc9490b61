"""finding embeddings stored once, for semantic ranking without embedding per question (issue 13 item 7)

``finding_embedding``: one unit vector per finding and embedding model (``model`` is the
embedder's key, e.g. ``minilm``; ``vector`` is ``dim`` little-endian float32 values), deleted
with its finding. ``id`` grows with each row written, so a running process reads only the
rows it has not seen yet (a range of the primary key). No index on ``model`` alone: SQLite
chose it over the (finding, model) pair to look up a question's candidates, and scanned every
vector (100 ms for 80 findings of 100,000, 1 ms without it). NumPy ranks the vectors on both
databases: no pgvector, which would tie the catalog to a PostgreSQL extension.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 16:00:00
"""
from alembic import op
import sqlalchemy as sa
import apolo_node.catalog.models


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "finding_embedding",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("finding_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["finding_id"], ["finding.id"], name=op.f("fk_finding_embedding_finding_id_finding"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_finding_embedding")),
        sa.UniqueConstraint("finding_id", "model", name=op.f("uq_finding_embedding_finding_id")),
    )


def downgrade() -> None:
    op.drop_table("finding_embedding")
