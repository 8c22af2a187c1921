"""deletions: deleted items whose stored files are still to be deleted

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 08:20:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('deletions',
                    sa.Column('item_id', sa.String(length=32), nullable=False),
                    sa.Column('denoiser_version', sa.String(length=128), nullable=True),
                    sa.Column('ran', sa.Boolean(), nullable=False),
                    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('item_id'))
    op.create_index('ix_deletions_due_at', 'deletions', ['due_at'])


def downgrade() -> None:
    op.drop_index('ix_deletions_due_at', table_name='deletions')
    op.drop_table('deletions')
