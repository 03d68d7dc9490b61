"""study narrative (findings and impression) and the vision trace, issue 12 (placeholder until that work lands: no change yet)

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


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
