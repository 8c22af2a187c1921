"""batches, items, results

Revision ID: 0001
Revises:
Create Date: 2026-11-25 11:53:05.282312
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('batches',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('denoiser', sa.String(length=64), nullable=False),
    sa.Column('captioner', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batches_created_at'), ['created_at'], unique=False)

    op.create_table('items',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('batch_id', sa.String(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('state', sa.Enum('queued', 'running', 'done', 'failed', name='item_state'), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('deliveries', sa.Integer(), nullable=False),
    sa.Column('has_reference', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batches.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_items_batch_id'), ['batch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_items_state'), ['state'], unique=False)

    op.create_table('results',
    sa.Column('item_id', sa.String(length=32), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('sigma_estimate', sa.Float(), nullable=False),
    sa.Column('psnr_noisy', sa.Float(), nullable=True),
    sa.Column('ssim_noisy', sa.Float(), nullable=True),
    sa.Column('psnr', sa.Float(), nullable=True),
    sa.Column('ssim', sa.Float(), nullable=True),
    sa.Column('brisque_noisy', sa.Float(), nullable=True),
    sa.Column('brisque', sa.Float(), nullable=True),
    sa.Column('caption', sa.Text(), nullable=False),
    sa.Column('caption_noisy', sa.Text(), nullable=False),
    sa.Column('denoiser_version', sa.String(length=128), nullable=False),
    sa.Column('captioner_version', sa.String(length=128), nullable=False),
    sa.Column('denoised_key', sa.String(length=255), nullable=False),
    sa.Column('noisy_key', sa.String(length=255), nullable=False),
    sa.Column('timings', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id')
    )
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_results_psnr'), ['psnr'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_results_psnr'))

    op.drop_table('results')
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_items_state'))
        batch_op.drop_index(batch_op.f('ix_items_batch_id'))

    op.drop_table('items')
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_batches_created_at'))

    op.drop_table('batches')
    sa.Enum(name='item_state').drop(op.get_bind(), checkfirst=True)
