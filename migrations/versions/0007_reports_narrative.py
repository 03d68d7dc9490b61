"""report narrative: a study's findings text, impression and the model's reasoning trace (issue 12)

Three nullable text columns on ``report``, as the SR holds them; reports written before this
revision keep NULL (``apolo-node db rebuild-reports`` fills them from SRs that carry a narrative).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:55:00
"""
from alembic import op
import sqlalchemy as sa
import apolo_node.catalog.models


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

COLUMNS = ('narrative_findings', 'impression', 'trace')


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, not batch mode (see 0004): the report table is referenced.
    for name in COLUMNS:
        op.add_column('report', sa.Column(name, sa.Text(), nullable=True))


def downgrade() -> None:
    for name in reversed(COLUMNS):
        op.drop_column('report', name)
