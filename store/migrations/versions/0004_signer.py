"""The signer's answered requests: a retried request id replays its answer (issue 12)

Revision ID: 0004_signer
Revises: 0003_ca_key_uri
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store._types

revision = "0004_signer"
down_revision = "0003_ca_key_uri"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signer_requests",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("certificate_id", sa.Integer(), nullable=True),
        sa.Column("answer_sealed", sa.Text(), nullable=False),
        sa.Column("created_at", store._types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_signer_requests_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["certificate_id"],
            ["certificates.id"],
            name=op.f("fk_signer_requests_certificate_id_certificates"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signer_requests")),
    )
    op.create_index(
        op.f("ix_signer_requests_user_id"), "signer_requests", ["user_id"], unique=False
    )
    op.create_index(
        op.f("ix_signer_requests_created_at"), "signer_requests", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_signer_requests_created_at"), table_name="signer_requests")
    op.drop_index(op.f("ix_signer_requests_user_id"), table_name="signer_requests")
    op.drop_table("signer_requests")
