"""unapplied credits: why held, from whom, and their refund (specs/0004 §10, ADR 0270);
payouts the arbiter's bank rejected or returned, as a node was told (specs/0004 §9)

Revision ID: 0008
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("unapplied_credit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(16), nullable=False,
                                      server_default="unmatched"))
        batch_op.add_column(sa.Column("status", sa.String(16), nullable=False,
                                      server_default="held"))
        batch_op.add_column(sa.Column("channel_id", sa.String(64), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("sender", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("refund_account", sa.Text(), nullable=False,
                                      server_default=""))
    op.create_table(
        "payout_return",
        sa.Column("channel_id", sa.String(length=64), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("party", sa.String(length=64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=8), nullable=False),
        sa.Column("returned_ms", sa.BigInteger(), nullable=False),
        sa.Column("notice", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("channel_id", "reference", name=op.f("pk_payout_return")),
    )


def downgrade() -> None:
    op.drop_table("payout_return")
    with op.batch_alter_table("unapplied_credit", schema=None) as batch_op:
        for column in ("refund_account", "sender", "channel_id", "status", "kind"):
            batch_op.drop_column(column)
