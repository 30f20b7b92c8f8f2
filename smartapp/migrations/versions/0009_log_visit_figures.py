"""log visit figures (issue 15): the dashboard's figures of each kept visit as typed columns,
added up in SQL on each view.

The kept visits are rebuilt from the log on the next view (their state is dropped here), so
every visit gets its figure row.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 15:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FLAGS = (
    "suggestions",
    "signed",
    "decisions",
    "accepted",
    "coach",
    "contacted",
    "handoff",
    "by_partner",
    "by_coach",
    "attended",
    "engaged",
    "first_contacted",
    "arrival",
)
DIGESTS = ("shape", "declines", "demographics")
SPANS = ("to_decision", "to_contact", "to_first_contact", "to_scheduled", "to_attended")
# Times from arrival read in order along an index: medians by OFFSET, histograms as ranges.
INDEXED = (
    ("coach", "to_decision"),
    ("coach", "to_contact"),
    ("handoff", "to_first_contact"),
    ("handoff", "to_scheduled"),
    ("handoff", "to_attended"),
)

# The grouped sums read along covering indexes, in group order (no sort).
COVERING = {
    "sums": ("week", "shape", "id", *FLAGS[:4], "coach", "contacted", "by_partner", "by_coach")
    + ("arrival", "handoff", "first_contacted", "attended", "engaged", "first_shown"),
    "demographics": ("demographics", "decisions", "accepted", "first_shown"),
    "labels": ("handoff", "labels", "coach", "by_partner", "by_coach", "attended", "engaged")
    + ("first_shown",),
}


def upgrade() -> None:
    op.create_table(
        "log_visit_figure",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("visit_key", sa.String(length=64), nullable=False),
        sa.Column("first_shown", sa.DateTime(timezone=True), nullable=False),
        sa.Column("week", sa.Integer(), nullable=False),
        sa.Column("patient", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in FLAGS),
        *(sa.Column(name, sa.Double(), nullable=True) for name in SPANS),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in DIGESTS),
        sa.Column("labels", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("visit_key"),
    )
    with op.batch_alter_table("log_visit_figure", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_log_visit_figure_first_shown"), ["first_shown"])
        batch_op.create_index("ix_log_visit_figure_patient", ["patient", "first_shown"])
        for within, column in INDEXED:
            batch_op.create_index(f"ix_log_visit_figure_{column}", [within, column, "first_shown"])
        for name, columns in COVERING.items():
            batch_op.create_index(f"ix_log_visit_figure_{name}", list(columns))
    op.create_table(
        "log_visit_text",
        sa.Column("digest", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    # Rebuilt from the log on the next view, figures included.
    op.execute("DELETE FROM log_visit_summary")
    op.execute("DELETE FROM log_summary_state WHERE name = 'dashboard'")


def downgrade() -> None:
    with op.batch_alter_table("log_visit_figure", schema=None) as batch_op:
        for _, column in INDEXED:
            batch_op.drop_index(f"ix_log_visit_figure_{column}")
        for name in COVERING:
            batch_op.drop_index(f"ix_log_visit_figure_{name}")
        batch_op.drop_index("ix_log_visit_figure_patient")
        batch_op.drop_index(batch_op.f("ix_log_visit_figure_first_shown"))
    op.drop_table("log_visit_figure")
    op.drop_table("log_visit_text")
