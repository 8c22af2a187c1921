"""results (created_at, item_id) index: the caption export's keyset order and /metrics' recent stage timings

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 16:30:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():  # PostgreSQL: built beside the workers' inserts, not blocking them
        op.create_index('ix_results_created_at_item_id', 'results', ['created_at', 'item_id'],
                        postgresql_concurrently=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index('ix_results_created_at_item_id', table_name='results', postgresql_concurrently=True)
