"""gallery_sessions.api_key_id: the key a browser signed in with, so that revoking the key ends the session

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 05:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('gallery_sessions') as batch:  # sessions opened before have no key: they are over
        batch.add_column(sa.Column('api_key_id', sa.String(length=32), nullable=True))
        batch.create_foreign_key('fk_gallery_sessions_api_key', 'api_keys', ['api_key_id'], ['id'], ondelete='CASCADE')


def downgrade() -> None:
    with op.batch_alter_table('gallery_sessions') as batch:
        batch.drop_constraint('fk_gallery_sessions_api_key', type_='foreignkey')
        batch.drop_column('api_key_id')
