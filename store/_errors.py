"""Errors raised by the store.

::

    StoreError (RuntimeError)
    ├── SchemaOutOfDate      the database is behind the code's migrations
    └── SealError            a sealed secret cannot be opened (wrong or rotated key)
"""

from __future__ import annotations


class StoreError(RuntimeError):
    """Base class of the store's errors."""


class SchemaOutOfDate(StoreError):
    def __init__(self, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(
            f"the database schema is at revision {current or '(empty)'} but this version needs "
            f"{head}; run 'brokergate db upgrade' first"
        )


class SealError(StoreError):
    def __init__(self) -> None:
        super().__init__(
            "a sealed secret could not be opened: the secret key differs from the one it was "
            "sealed with (check BROKERGATE_STORE__SECRET_KEY or store.secret_key_file)"
        )
