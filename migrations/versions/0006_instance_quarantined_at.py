"""instance quarantined at: when an instance was quarantined, for the retention period

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 11:51:31.034674
"""
from alembic import op
import sqlalchemy as sa
import apolo_node.catalog.models


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD/DROP COLUMN, not batch mode (see 0004): the instance table is referenced.
    op.add_column(
        'instance',
        sa.Column('quarantined_at', apolo_node.catalog.models.UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column('instance', 'quarantined_at')
