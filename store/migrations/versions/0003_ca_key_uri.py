"""CA keys in a PKCS#11 token: a row keeps the key's PKCS#11 URI instead of its encrypted PEM

Revision ID: 0003_ca_key_uri
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_ca_key_uri"
down_revision = "0001_initial"
# A branch of its own (like "email"): it touches only the CA tables, so it stacks with
# migrations written at the same time on other branches.
branch_labels = ("ca_keys",)
depends_on = None

_TABLES = ("ca_roots", "ca_generations")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("key_uri", sa.String(length=512), nullable=True))
            batch_op.alter_column("key_pem_encrypted", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("key_pem_encrypted", existing_type=sa.Text(), nullable=False)
            batch_op.drop_column("key_uri")
