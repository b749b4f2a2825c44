"""email change tokens: the emailed link that confirms a broker's new address

Revision ID: 0002_email_change
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store._types

revision = "0002_email_change"
down_revision = "0001_initial"
branch_labels = ("email",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "email_change_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("new_email", sa.String(length=320), nullable=False),
        sa.Column("created_at", store._types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", store._types.UTCDateTime(), nullable=False),
        sa.Column("used_at", store._types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_email_change_tokens_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_change_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_email_change_tokens_token_hash")),
    )
    with op.batch_alter_table("email_change_tokens", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_change_tokens_user_id"), ["user_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("email_change_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_change_tokens_user_id"))
    op.drop_table("email_change_tokens")
