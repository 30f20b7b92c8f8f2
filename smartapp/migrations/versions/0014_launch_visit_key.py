"""launch context visit key (issue 15): the key of the visit a launch is about, kept on the
launch, so every screen, Sign and signed page reads the launch and its visit's referral in one
statement (a join on the referral's unique visit key) instead of two. A launch made before
this revision has none and is read as before (two statements); launches are short-lived.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("launch_context", schema=None) as batch_op:
        batch_op.add_column(sa.Column("visit_key", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("launch_context", schema=None) as batch_op:
        batch_op.drop_column("visit_key")
