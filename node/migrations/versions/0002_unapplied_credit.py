"""unapplied credits on the escrow account

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unapplied_credit",
        sa.Column("entry_id", sa.String(length=100), nullable=False),
        sa.Column("reference", sa.String(length=140), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("debtor", sa.String(length=200), nullable=False),
        sa.Column("booked_ms", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_unapplied_credit")),
    )
    with op.batch_alter_table("unapplied_credit", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_unapplied_credit_reference"), ["reference"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("unapplied_credit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_unapplied_credit_reference"))
    op.drop_table("unapplied_credit")
