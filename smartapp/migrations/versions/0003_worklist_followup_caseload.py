"""worklist followup caseload (issue 11)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:30:00
"""

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
