"""tenants, hashed API keys, batches owned by a tenant with an idempotency key, items.failure

Batches made before this revision belong to the tenant named "local" (the embedded default's tenant).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 14:40:42.502823
"""
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    tenants = op.create_table(
        'tenants',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'api_keys',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('tenant_id', sa.String(length=32), nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('label', sa.String(length=100), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_tenant_id'), ['tenant_id'], unique=False)

    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tenant_id', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('request_digest', sa.String(length=64), nullable=True))
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT count(*) FROM batches")).scalar():
        local = uuid.uuid4().hex
        op.bulk_insert(tenants, [{"id": local, "name": "local", "created_at": datetime.now(UTC)}])
        conn.execute(sa.text("UPDATE batches SET tenant_id = :t"), {"t": local})
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.alter_column('tenant_id', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_index(batch_op.f('ix_batches_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_unique_constraint('uq_batches_tenant_idempotency_key', ['tenant_id', 'idempotency_key'])
        batch_op.create_foreign_key('fk_batches_tenant', 'tenants', ['tenant_id'], ['id'], ondelete='CASCADE')

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('failure', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_column('failure')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_constraint('fk_batches_tenant', type_='foreignkey')
        batch_op.drop_constraint('uq_batches_tenant_idempotency_key', type_='unique')
        batch_op.drop_index(batch_op.f('ix_batches_tenant_id'))
        batch_op.drop_column('request_digest')
        batch_op.drop_column('idempotency_key')
        batch_op.drop_column('tenant_id')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_tenant_id'))
    op.drop_table('api_keys')
    op.drop_table('tenants')
