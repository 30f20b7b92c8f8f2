"""partners consent (issue 11): consents to share, partner tokens, used client assertions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partner_consent",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("referral_id", sa.String(length=64), nullable=False),
        sa.Column("partner_id", sa.String(length=100), nullable=False),
        sa.Column("program_id", sa.String(length=200), nullable=True),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.Column("recorded_by_ref", sa.String(length=500), nullable=True),
        sa.Column("recorded_by_name", sa.String(length=200), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by_ref", sa.String(length=500), nullable=True),
        sa.Column("revoked_by_name", sa.String(length=200), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("partner_consent", schema=None) as batch_op:
        for column in ("referral_id", "partner_id", "status"):
            batch_op.create_index(
                batch_op.f(f"ix_partner_consent_{column}"), [column], unique=False
            )
    op.create_table(
        "partner_token",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("partner_id", sa.String(length=100), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("kid", sa.String(length=200), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("partner_token", schema=None) as batch_op:
        for column in ("partner_id", "expires_at"):
            batch_op.create_index(batch_op.f(f"ix_partner_token_{column}"), [column], unique=False)
    op.create_table(
        "partner_assertion",
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("jti", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti"),
    )
    with op.batch_alter_table("partner_assertion", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_partner_assertion_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("partner_assertion")
    op.drop_table("partner_token")
    op.drop_table("partner_consent")
