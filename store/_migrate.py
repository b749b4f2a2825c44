"""Alembic, driven from code: ``brokergate db upgrade`` and the start-up check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from store._errors import SchemaOutOfDate

_MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    """An Alembic config that runs on ``engine`` (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def head_revisions(engine: Engine) -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())


def current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def upgrade(engine: Engine) -> None:
    """Apply every migration not yet applied (idempotent)."""
    command.upgrade(alembic_config(engine), "heads")


def ensure_current(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is at the code's head revision(s)."""
    current, heads = current_revisions(engine), head_revisions(engine)
    if current != heads:
        raise SchemaOutOfDate(",".join(sorted(current)) or None, ",".join(sorted(heads)))
