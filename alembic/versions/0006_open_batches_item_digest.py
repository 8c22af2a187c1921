"""batches.sealed_at (open batches take appends until sealed) and items.digest (an append sent twice is one item)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 05:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('batches') as batch:
        batch.add_column(sa.Column('sealed_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE batches SET sealed_at = created_at")  # every batch before this revision was complete
    with op.batch_alter_table('items') as batch:
        batch.add_column(sa.Column('digest', sa.String(length=64), nullable=True))
    op.create_index('ix_items_batch_id_digest', 'items', ['batch_id', 'digest'])


def downgrade() -> None:
    op.drop_index('ix_items_batch_id_digest', table_name='items')
    with op.batch_alter_table('items') as batch:
        batch.drop_column('digest')
    with op.batch_alter_table('batches') as batch:
        batch.drop_column('sealed_at')
