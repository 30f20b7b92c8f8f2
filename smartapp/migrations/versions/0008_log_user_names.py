"""log user names (issue 15): each user's display name kept beside the log for the console.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 11:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "log_user_name",
        sa.Column("user_ref", sa.String(length=500), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("seq", SEQ, nullable=False),
        sa.PrimaryKeyConstraint("user_ref"),
    )


def downgrade() -> None:
    op.drop_table("log_user_name")
