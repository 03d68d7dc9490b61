"""follow-up questions and redacted question text, issue 13 (placeholder until that work lands: no change yet)

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


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
