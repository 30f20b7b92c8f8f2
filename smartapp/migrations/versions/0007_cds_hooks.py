"""CDS Hooks (issue 14): the JWT ids each trusted CDS client used (the replay window)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 11:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cds_jwt_use",
        sa.Column("issuer", sa.String(length=500), nullable=False),
        sa.Column("jti", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "jti"),
    )
    with op.batch_alter_table("cds_jwt_use", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cds_jwt_use_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("cds_jwt_use", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cds_jwt_use_expires_at"))
    op.drop_table("cds_jwt_use")
