"""The Alembic migrations and the models describe the same schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from store import Base, current_revisions, ensure_current, head_revisions, make_engine, upgrade
from store._errors import SchemaOutOfDate


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
