"""log event tags (issue 15): the kinds and outcomes each event names, kept beside the log for
the console's filters. Filled from the log by `handoff db upgrade` or the first filtered view.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 19:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "log_event_tag",
        sa.Column("tag", sa.String(length=120), nullable=False),
        sa.Column("seq", SEQ, nullable=False),
        sa.PrimaryKeyConstraint("tag", "seq"),
    )


def downgrade() -> None:
    op.drop_table("log_event_tag")
