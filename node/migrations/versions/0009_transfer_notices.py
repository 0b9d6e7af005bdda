"""what the arbiter's bank did with each payout, as the arbiter told the node (ADR 0320):
a checkpoint settlement's status, reason, attempt and reference; a refund's attempt (ADR 0322)

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("settlement", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(16), nullable=False,
                                      server_default="submitted"))
        batch_op.add_column(sa.Column("reason", sa.String(8), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=False,
                                      server_default="0"))
        batch_op.add_column(sa.Column("changed_ms", sa.BigInteger(), nullable=False,
                                      server_default="0"))
    with op.batch_alter_table("unapplied_credit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refund_attempt", sa.Integer(), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("unapplied_credit", schema=None) as batch_op:
        batch_op.drop_column("refund_attempt")
    with op.batch_alter_table("settlement", schema=None) as batch_op:
        for column in ("changed_ms", "attempt", "reason", "status"):
            batch_op.drop_column(column)
