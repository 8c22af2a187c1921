"""results.notes: what the user is told of how a file was read or denoised (only a multi-page file's first page)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 23:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('results') as batch:  # results stored before have nothing to tell
        batch.add_column(sa.Column('notes', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('results') as batch:
        batch.drop_column('notes')
