"""The Alembic migrations and the models describe the same schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from store import Base, current_revisions, ensure_current, head_revisions, make_engine, upgrade
from store._errors import SchemaOutOfDate
from store._migrate import alembic_config


def test_migrations_match_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_migrations_apply_on_empty_database_and_are_idempotent(db_url: str) -> None:
    eng = make_engine(db_url)
    try:
        upgrade(eng)
        upgrade(eng)  # a second run changes nothing
        assert current_revisions(eng) == head_revisions(eng)
        tables = set(inspect(eng).get_table_names())
        assert set(Base.metadata.tables) <= tables
        ensure_current(eng)
    finally:
        eng.dispose()


def test_out_of_date_schema_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    eng = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        try:
            ensure_current(eng)
        except SchemaOutOfDate as exc:
            assert "brokergate db upgrade" in str(exc)
        else:
            raise AssertionError("an empty database must be reported as out of date")
    finally:
        eng.dispose()


def test_firms_migration_moves_every_user_into_a_head_office(db_url: str) -> None:
    """0006: each firm gets its head office; its admin (else its first user) is head user."""
    eng = make_engine(db_url)
    try:
        command.upgrade(alembic_config(eng), "0005_recovery")
        with eng.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO organisations (id, broker_number, name, created_at) VALUES "
                    "(1, '60/123/4567', 'Muster BV', '2026-01-01 00:00:00'), "
                    "(2, '70/111/2222', NULL, '2026-01-01 00:00:00')"
                )
            )
            for uid, org, role in [
                (1, 1, "broker"),
                (2, 1, "admin"),
                (3, 2, "ops"),
                (4, 2, "broker"),
            ]:
                conn.execute(
                    text(
                        "INSERT INTO users (id, organisation_id, email, name, locale, role, "
                        "status, created_at) VALUES (:id, :org, :email, 'N', 'de', :role, "
                        "'active', '2026-01-01 00:00:00')"
                    ),
                    {"id": uid, "org": org, "email": f"u{uid}@example.org", "role": role},
                )
        upgrade(eng)
        with eng.connect() as conn:
            offices = conn.execute(
                text(
                    "SELECT organisation_id, number, name, head_office_id FROM offices ORDER BY id"
                )
            ).all()
            users = conn.execute(
                text(
                    "SELECT u.id, u.role, o.number FROM users u JOIN offices o "
                    "ON o.id = u.office_id ORDER BY u.id"
                )
            ).all()
        assert [tuple(o) for o in offices] == [
            (1, "60/123/4567", "Muster BV", None),
            (2, "70/111/2222", "70/111/2222", None),
        ]
        assert [tuple(u) for u in users] == [
            (1, "employee", "60/123/4567"),
            (2, "head", "60/123/4567"),
            (3, "head", "70/111/2222"),
            (4, "employee", "70/111/2222"),
        ]
    finally:
        eng.dispose()
