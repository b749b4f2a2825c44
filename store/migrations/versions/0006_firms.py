"""firms: offices (head office and sub-offices), users' office, role and rights (issue 13)

Every existing organisation gets its head office (number = the broker number), every user
moves into it; ``admin`` becomes the head user, ``broker`` and ``ops`` employees, and a firm
without an admin gets its first user as head user. Everybody gets every product right of the
catalogue as it ships (DIP, DIL, ORV), which is what they could do before rights existed.

Revision ID: 0006_firms
Revises: 0005_recovery
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import store._types

revision = "0006_firms"
down_revision = "0005_recovery"
branch_labels = None
depends_on = None

# The catalogue the product ships with (ca/_firm_settings.py); fixed here, as a migration
# must not change meaning when the configuration does.
_SHIPPED_RIGHTS = ["DIL", "DIP", "ORV"]


def _role_enum(*values: str) -> sa.Enum:
    return sa.Enum(*values, name="user_role", native_enum=False, create_constraint=True, length=24)


_OLD_ROLE = _role_enum("broker", "admin", "ops")
_NEW_ROLE = _role_enum("head", "employee")


def upgrade() -> None:
    op.create_table(
        "offices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("head_office_id", sa.Integer(), nullable=True),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("address", sa.String(length=256), nullable=True),
        sa.Column("postcode", sa.String(length=16), nullable=True),
        sa.Column("city", sa.String(length=128), nullable=True),
        sa.Column("phone", sa.String(length=64), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("rights", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", store._types.UTCDateTime(), nullable=False),
        sa.Column("deactivated_at", store._types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["head_office_id"], ["offices.id"], name=op.f("fk_offices_head_office_id_offices")
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
            name=op.f("fk_offices_organisation_id_organisations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offices")),
        sa.UniqueConstraint("email", name=op.f("uq_offices_email")),
        sa.UniqueConstraint("organisation_id", "number", name=op.f("uq_offices_organisation_id")),
    )
    with op.batch_alter_table("offices", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_offices_head_office_id"), ["head_office_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_offices_organisation_id"), ["organisation_id"], unique=False
        )

    # The role's CHECK constraint allows only the old names: loosen it to a plain string
    # while the rows are rewritten, then constrain it to the new names.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("office_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("rights", sa.JSON(), nullable=True))
        batch_op.alter_column(
            "role", existing_type=_OLD_ROLE, type_=sa.String(length=24), existing_nullable=False
        )

    _move_users_into_head_offices()

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("office_id", existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column("rights", existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column(
            "role", existing_type=sa.String(length=24), type_=_NEW_ROLE, existing_nullable=False
        )
        batch_op.create_index(batch_op.f("ix_users_office_id"), ["office_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_users_office_id_offices"), "offices", ["office_id"], ["id"]
        )


def _move_users_into_head_offices() -> None:
    bind = op.get_bind()
    organisations = sa.table(
        "organisations",
        sa.column("id", sa.Integer()),
        sa.column("broker_number", sa.String()),
        sa.column("name", sa.String()),
        sa.column("created_at", store._types.UTCDateTime()),
    )
    offices = sa.table(
        "offices",
        sa.column("id", sa.Integer()),
        sa.column("organisation_id", sa.Integer()),
        sa.column("head_office_id", sa.Integer()),
        sa.column("number", sa.String()),
        sa.column("name", sa.String()),
        sa.column("rights", sa.JSON()),
        sa.column("active", sa.Boolean()),
        sa.column("created_at", store._types.UTCDateTime()),
    )
    users = sa.table(
        "users",
        sa.column("id", sa.Integer()),
        sa.column("organisation_id", sa.Integer()),
        sa.column("office_id", sa.Integer()),
        sa.column("role", sa.String()),
        sa.column("rights", sa.JSON()),
    )
    for org_id, number, name, created_at in bind.execute(
        sa.select(
            organisations.c.id,
            organisations.c.broker_number,
            organisations.c.name,
            organisations.c.created_at,
        )
    ).all():
        office_id = bind.execute(
            offices.insert()
            .values(
                organisation_id=org_id,
                head_office_id=None,
                number=number,
                name=name or number,
                rights=_SHIPPED_RIGHTS,
                active=True,
                created_at=created_at,
            )
            .returning(offices.c.id)
        ).scalar_one()
        members = bind.execute(
            sa.select(users.c.id, users.c.role)
            .where(users.c.organisation_id == org_id)
            .order_by(users.c.id)
        ).all()
        admins = {uid for uid, role in members if role == "admin"}
        if not admins and members:
            admins = {members[0][0]}
        for uid, _role in members:
            bind.execute(
                users.update()
                .where(users.c.id == uid)
                .values(
                    office_id=office_id,
                    role="head" if uid in admins else "employee",
                    rights=_SHIPPED_RIGHTS,
                )
            )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_users_office_id_offices"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_users_office_id"))
        batch_op.alter_column(
            "role", existing_type=_NEW_ROLE, type_=sa.String(length=24), existing_nullable=False
        )
    users = sa.table("users", sa.column("role", sa.String()))
    op.execute(users.update().where(users.c.role == "head").values(role="admin"))
    op.execute(users.update().where(users.c.role == "employee").values(role="broker"))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column(
            "role", existing_type=sa.String(length=24), type_=_OLD_ROLE, existing_nullable=False
        )
        batch_op.drop_column("rights")
        batch_op.drop_column("office_id")
    with op.batch_alter_table("offices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offices_organisation_id"))
        batch_op.drop_index(batch_op.f("ix_offices_head_office_id"))
    op.drop_table("offices")
