"""Random tokens and the hashes we keep of them instead of the tokens themselves.

Two kinds of hash, chosen by the entropy of what is hashed:

* high-entropy tokens (≥ 128 bits: activation links, remembered-device cookies, and the
  80-bit recovery codes) are stored as plain SHA-256. Nobody can search 2**80 inputs, so a
  slow hash adds nothing, and a fast one lets us look the row up by its hash.
* low-entropy codes (an 8-digit TAN: 10**8 values) would fall to a brute force of a plain
  hash in a second, so they are stored as HMAC-SHA256 under a key derived from the
  application secret: a copy of the database alone does not reveal them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store import ActivationToken, EmailChangeToken, PasswordResetToken

TOKEN_BYTES = 32  # 256 bits: unguessable for any lifetime we give a token


def new_token() -> str:
    """A URL-safe random token (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """SHA-256 (lower-case hex) of a high-entropy token."""
    return hashlib.sha256(token.encode()).hexdigest()


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for ``purpose`` from the application secret (HKDF-SHA256)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"brokergate/{purpose}".encode()
    ).derive(secret)


def keyed_hash(key: bytes, value: str) -> str:
    """HMAC-SHA256 (lower-case hex) of a low-entropy code under ``key``."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    # SECURITY: compare_digest so the time taken says nothing about how much matched.
    return hmac.compare_digest(a.encode(), b.encode())


LinkRow = TypeVar("LinkRow", ActivationToken, EmailChangeToken, PasswordResetToken)


def expire_open_links(session: Session, model: type[LinkRow], user_id: int, now: datetime) -> None:
    """A new mailed link replaces the user's open ones of this kind: they expire ``now``."""
    session.execute(
        update(model)
        .where(model.user_id == user_id, model.used_at.is_(None))
        .values(expires_at=now)
    )


def live_link_row(
    session: Session,
    model: type[LinkRow],
    token: str,
    now: datetime,
    invalid: Callable[[str], Exception],
) -> LinkRow:
    """The unused, unexpired row of a mailed one-time link, locked for the caller's
    transaction; otherwise ``invalid("unknown" | "used" | "expired")`` is raised."""
    row = session.scalar(
        select(model).where(model.token_hash == token_hash(token)).with_for_update()
    )
    if row is None:
        raise invalid("unknown")
    if row.used_at is not None:
        raise invalid("used")
    if row.expires_at <= now:
        raise invalid("expired")
    return row
