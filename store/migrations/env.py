"""Alembic environment: runs on the engine handed over by store._migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from store._models import Base

config = context.config
engine = config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - only via store._migrate
    raise RuntimeError("run migrations through 'brokergate db upgrade'")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite can only ALTER through table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
