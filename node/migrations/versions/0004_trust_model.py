"""delivery lanes and dedup keys, signed peer records, fresh callbacks

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient", sa.String(64), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("purpose", sa.String(64), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("urgent", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column("refused", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.create_index("ix_outbox_dedup", ["channel_id", "recipient", "purpose"])
    with op.batch_alter_table("peer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("issued_ms", sa.BigInteger(), nullable=False,
                                      server_default="0"))
    with op.batch_alter_table("escrow", schema=None) as batch_op:
        batch_op.add_column(sa.Column("opener_url_ms", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("peer_url_ms", sa.BigInteger(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("escrow", schema=None) as batch_op:
        batch_op.drop_column("peer_url_ms")
        batch_op.drop_column("opener_url_ms")
    with op.batch_alter_table("peer", schema=None) as batch_op:
        batch_op.drop_column("issued_ms")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_dedup")
        batch_op.drop_column("refused")
        batch_op.drop_column("urgent")
        batch_op.drop_column("purpose")
        batch_op.drop_column("recipient")
