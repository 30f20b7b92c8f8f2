"""log handoff holdings (issue 15): each coach's holding of a handoff kept beside the log for
the supervisor's caseload series. Filled from the log by `handoff db upgrade` or the first
supervisor view.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 20:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "log_handoff_holding",
        sa.Column("referral", sa.String(length=64), nullable=False),
        sa.Column("start_seq", SEQ, nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("coach_ref", sa.String(length=500), nullable=False),
        sa.Column("coach_name", sa.String(length=200), nullable=False),
        sa.Column("end_seq", SEQ, nullable=True),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("referral", "start_seq"),
    )
    with op.batch_alter_table("log_handoff_holding", schema=None) as batch_op:
        batch_op.create_index("ix_log_handoff_holding_open", ["end_seq"])
        batch_op.create_index("ix_log_handoff_holding_end_at", ["end_at"])
        batch_op.create_index("ix_log_handoff_holding_coach", ["coach_ref", "start_seq"])


def downgrade() -> None:
    op.drop_table("log_handoff_holding")
