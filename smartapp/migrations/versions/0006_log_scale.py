"""log at scale (issue 15): how far the chain was verified, tamper marks written by triggers on
the log's tables, the dashboard's visit summaries and how far they were brought.

The triggers record any UPDATE or DELETE of `log_event` / `log_checkpoint` rows (Handoff only
ever inserts): the console's incremental verification then goes back over the whole log.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 11:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TABLES = ("log_event", "log_checkpoint")


def upgrade() -> None:
    op.create_table(
        "log_verification",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", SEQ, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("checkpoint", SEQ, nullable=False),
        sa.Column("mark", SEQ, nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("full_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("full_seq", SEQ, nullable=True),
        sa.Column("full_ok", sa.Boolean(), nullable=True),
        sa.Column("full_summary", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "log_tamper_mark",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("table_name", sa.String(length=40), nullable=False),
        sa.Column("seq", SEQ, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "log_visit_summary",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("visit_key", sa.String(length=64), nullable=False),
        sa.Column("referral", sa.String(length=200), nullable=True),
        sa.Column("first_shown", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("visit_key"),
    )
    with op.batch_alter_table("log_visit_summary", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_log_visit_summary_referral"), ["referral"])
        batch_op.create_index(batch_op.f("ix_log_visit_summary_first_shown"), ["first_shown"])
    op.create_table(
        "log_summary_state",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("seq", SEQ, nullable=False),
        sa.Column("mark", SEQ, nullable=False),
        sa.Column("unreadable", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_triggers()
    else:
        _sqlite_triggers()


def _sqlite_triggers() -> None:
    for table in TABLES:
        for action, row in (("UPDATE", "OLD"), ("DELETE", "OLD")):
            op.execute(
                f"CREATE TRIGGER {table}_{action.lower()}_mark AFTER {action} ON {table} "
                f"BEGIN INSERT INTO log_tamper_mark (table_name, seq) "
                f"VALUES ('{table}', {row}.seq); END"
            )


def _postgresql_triggers() -> None:
    op.execute(
        "CREATE FUNCTION log_tamper_mark_row() RETURNS trigger AS $$ BEGIN "
        "INSERT INTO log_tamper_mark (table_name, seq) VALUES (TG_TABLE_NAME, OLD.seq); "
        "RETURN NULL; END $$ LANGUAGE plpgsql"
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_change_mark AFTER UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION log_tamper_mark_row()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_change_mark ON {table}")
        op.execute("DROP FUNCTION IF EXISTS log_tamper_mark_row()")
    else:
        for table in TABLES:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_{action}_mark")
    op.drop_table("log_summary_state")
    with op.batch_alter_table("log_visit_summary", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_log_visit_summary_first_shown"))
        batch_op.drop_index(batch_op.f("ix_log_visit_summary_referral"))
    op.drop_table("log_visit_summary")
    op.drop_table("log_tamper_mark")
    op.drop_table("log_verification")
