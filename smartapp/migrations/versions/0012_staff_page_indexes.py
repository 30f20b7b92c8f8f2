"""staff page indexes (issue 15): referrals by signing time, and the follow-up contacts not
made yet by due time, so the coach team's pages read the referrals signed lately and the
overdue contacts along an index instead of every row kept.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 02:40:00
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.create_index("ix_referral_created_at", ["created_at"])
    with op.batch_alter_table("followup_contact", schema=None) as batch_op:
        batch_op.create_index("ix_followup_contact_open", ["done_at", "due_at"])


def downgrade() -> None:
    with op.batch_alter_table("followup_contact", schema=None) as batch_op:
        batch_op.drop_index("ix_followup_contact_open")
    with op.batch_alter_table("referral", schema=None) as batch_op:
        batch_op.drop_index("ix_referral_created_at")
