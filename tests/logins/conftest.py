"""Fixtures of the login-service tests: settings, sealers, users made straight in the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import create_user
from gateway.logins import LoginSettings, derive_key, hash_password
from gateway.logins._tan import TAN_KEY_PURPOSE
from gateway.logins._totp import TOTP_PURPOSE
from store import (
    OUTBOX_PURPOSE,
    AuditEvent,
    Sealer,
    UserRole,
    UserStatus,
    transaction,
)

SECRET = b"test-secret-key-0123456789abcdef"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def settings() -> LoginSettings:
    return LoginSettings()


@pytest.fixture
def outbox_sealer() -> Sealer:
    return Sealer(secret=SECRET, purpose=OUTBOX_PURPOSE)


@pytest.fixture
def totp_sealer() -> Sealer:
    return Sealer(secret=SECRET, purpose=TOTP_PURPOSE)


@pytest.fixture
def tan_key() -> bytes:
    return derive_key(SECRET, TAN_KEY_PURPOSE)


MakeAccount = Callable[..., int]


@cache
def _hashed(password: str) -> str:
    # argon2id at full cost takes ~50 ms; one hash per password keeps the suite quick.
    return hash_password(password)


@pytest.fixture
def make_account(sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> MakeAccount:
    """Create a user (and its organisation if new); returns the user id."""
    counter = iter(range(1, 1000))

    def make(
        *,
        email: str | None = None,
        broker: str = "60/123/4567",
        name: str = "Hans Muster",
        password: str | None = PASSWORD,
        role: UserRole | None = None,
        status: UserStatus = UserStatus.ACTIVE,
        locale: str = "de",
    ) -> int:
        n = next(counter)
        with transaction(sessions) as session:
            user = create_user(
                session,
                broker_number=broker,
                email=email or f"broker{n}@example.org",
                name=name,
                locale=locale,
                role=role,
                status=status,
                now=clock(),
                actor="test:setup",
            )
            user.password_hash = _hashed(password) if password else None
            session.flush()
            return user.id

    return make


def audit_events(sessions: sessionmaker[Session], action: str | None = None) -> list[AuditEvent]:
    with transaction(sessions) as session:
        stmt = select(AuditEvent).order_by(AuditEvent.id)
        if action:
            stmt = stmt.where(AuditEvent.action == action)
        return list(session.scalars(stmt))
