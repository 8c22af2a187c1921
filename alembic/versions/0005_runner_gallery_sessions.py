"""items.runner (who claimed an item) and server-side gallery sessions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 05:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('items') as batch:
        batch.add_column(sa.Column('runner', sa.String(length=128), nullable=True))
    op.create_table(
        'gallery_sessions',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('tenant_id', sa.String(length=32), nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_gallery_sessions_tenant_id', 'gallery_sessions', ['tenant_id'])


def downgrade() -> None:
    op.drop_index('ix_gallery_sessions_tenant_id', table_name='gallery_sessions')
    op.drop_table('gallery_sessions')
    with op.batch_alter_table('items') as batch:
        batch.drop_column('runner')
