"""The store's settings (read once by the CLI, passed down)."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_URL = "sqlite:///data/brokergate.db"  # one file, zero set-up (DESIGN.md)


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    url: str = field(
        default=DEFAULT_URL,
        metadata={"help": "SQLAlchemy database URL: a SQLite file, or postgresql+psycopg://…"},
    )
    secret_key: bytes = field(
        default=b"",
        repr=False,
        metadata={
            "help": "Application secret (≥ 16 bytes) that seals outbox secrets, TOTP secrets "
            "and signing keys at rest",
            "secret": True,
        },
    )
    echo_sql: bool = field(default=False, metadata={"help": "Log every SQL statement (debugging)"})
