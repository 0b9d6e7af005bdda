"""usage events: the deduplication window of idempotent usage events (specs/0003 §5.4)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_event",
        sa.Column("key", sa.LargeBinary(16), nullable=False),
        sa.Column("content", sa.LargeBinary(16), nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_usage_event"),
        sqlite_with_rowid=False,  # the primary key is the table: no second copy of the ids
    )
    op.create_index("ix_usage_event_time_ms", "usage_event", ["time_ms"])


def downgrade() -> None:
    op.drop_index("ix_usage_event_time_ms", table_name="usage_event")
    op.drop_table("usage_event")
