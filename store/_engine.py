"""Engine and session factory: SQLite by default, PostgreSQL by URL.

The caller (the CLI, the gateway's cleanup_ctx, the renewal process) owns the
engine's life cycle and disposes of it; nothing here keeps global state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL lets the gateway read while the scheduler writes; busy_timeout makes writers queue
    # instead of failing with "database is locked" when two processes share the file.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str, *, echo: bool = False, pool_size: int | None = None) -> Engine:
    """Create an engine for ``url``; a SQLite file's folder is created if missing.

    ``pool_size``: connections kept open (SQLAlchemy's default, 5, when None); a caller that
    runs store calls in N threads passes N so no thread waits for a connection.
    """
    parsed = make_url(url)
    # SECURITY: a failed statement's parameters (password hashes, sealed secrets, session
    # ids) would otherwise be part of the exception text, and exceptions get logged.
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if pool_size is not None:
        kwargs["pool_size"] = pool_size
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 15}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(parsed, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        # pysqlite defers BEGIN until the first write, so a read-then-write (claiming an outbox
        # row, consuming a TAN) could interleave with another process. BEGIN IMMEDIATE takes the
        # write lock up front; WAL keeps plain readers unblocked.
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see make_engine)
    _sqlite_pragmas(dbapi_connection, record)


def _sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session
