"""worklist followup caseload (issue 11)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NEW_COLUMNS = (
    ("business_status", sa.String(length=40)),
    ("owner_kind", sa.String(length=20)),
    ("contact_result", sa.String(length=20)),
    ("linked_program_id", sa.String(length=100)),
    ("partner", sa.String(length=100)),
    ("output", sa.String(length=500)),
)


def upgrade() -> None:
    with op.batch_alter_table("coach_handoff", schema=None) as batch_op:
        for name, type_ in NEW_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index(batch_op.f("ix_coach_handoff_coach_ref"), ["coach_ref"])
    with op.batch_alter_table("coach_handoff", schema=None) as batch_op:
        batch_op.alter_column("attempts", server_default=None)
    op.create_table(
        "followup_contact",
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.String(length=20), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("by_ref", sa.String(length=500), nullable=True),
        sa.Column("by_name", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("referral_id", "day"),
    )
    with op.batch_alter_table("followup_contact", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_followup_contact_due_at"), ["due_at"])
    op.create_table(
        "followup_outcome",
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by_ref", sa.String(length=500), nullable=True),
        sa.Column("by_name", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("referral_id", "day"),
    )


def downgrade() -> None:
    op.drop_table("followup_outcome")
    with op.batch_alter_table("followup_contact", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_followup_contact_due_at"))
    op.drop_table("followup_contact")
    with op.batch_alter_table("coach_handoff", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_coach_handoff_coach_ref"))
        batch_op.drop_column("attempts")
        for name, _ in reversed(NEW_COLUMNS):
            batch_op.drop_column(name)
