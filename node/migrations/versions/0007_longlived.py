"""long-lived channels: checkpoint schedules, settlements at checkpoints, top-ups

Revision ID: 0007
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "settle_schedule",
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("every_ms", sa.BigInteger(), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("channel_id", name="pk_settle_schedule"),
    )
    op.create_table(
        "settlement",
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("party", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(35), nullable=False),
        sa.Column("signed_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("channel_id", "seq", "party", name="pk_settlement"),
    )
    op.create_table(
        "topup",
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.String(40), nullable=False),
        sa.Column("requested_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("channel_id", "seq", name="pk_topup"),
    )


def downgrade() -> None:
    op.drop_table("topup")
    op.drop_table("settlement")
    op.drop_table("settle_schedule")
