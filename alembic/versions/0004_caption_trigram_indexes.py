"""trigram indexes for caption search

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 17:40:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("caption", "caption_noisy")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")  # trusted since PostgreSQL 13: no superuser needed
    for column in COLUMNS:
        op.create_index(f"ix_results_{column}_trgm", "results", [column], postgresql_using="gin",
                        postgresql_ops={column: "gin_trgm_ops"})


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_index(f"ix_results_{column}_trgm", table_name="results")
