"""log event type and time (issue 15): the events of some types in a span of days along one
index, so the supervisor's page reads its 14 days' handoff events without walking every event
of those types the log ever held (the type index alone: 90 ms for an empty span at 100k
events, growing with the log).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 03:10:00
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("log_event", schema=None) as batch_op:
        batch_op.create_index("ix_log_event_type_at", ["type", "at"])


def downgrade() -> None:
    with op.batch_alter_table("log_event", schema=None) as batch_op:
        batch_op.drop_index("ix_log_event_type_at")
