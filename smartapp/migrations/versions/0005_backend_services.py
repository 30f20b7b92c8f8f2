"""backend services (issue 11): no table. Backend tokens live in each process's memory only
(smartapp/launch/backend.py), never in the database; the registration's `backend:` block is
configuration (launch/*.yaml).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:30:00
"""

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
