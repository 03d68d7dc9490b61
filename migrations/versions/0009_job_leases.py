"""job leases for worker processes on a shared catalog, issue 14 (placeholder until that work lands: no change yet)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 14:55:00
"""
from alembic import op
import sqlalchemy as sa
import apolo_node.catalog.models


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
