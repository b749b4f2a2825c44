"""Sealing of secrets kept briefly in the database (outbox passwords, TOTP secrets).

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with a key derived by
HKDF from the configured application secret, so that any length of secret
works and different purposes never share a key.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from store._errors import SealError


def _derive(secret: bytes, purpose: str) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"brokergate/{purpose}".encode()
    ).derive(secret)
    return Fernet(base64.urlsafe_b64encode(key))


@dataclass(frozen=True, kw_only=True)
class Sealer:
    """Seals and opens small secrets for one purpose ("outbox", "totp", ...)."""

    secret: bytes = field(repr=False)
    purpose: str

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("the application secret key must be at least 16 bytes")

    def seal(self, plaintext: bytes) -> bytes:
        return _derive(self.secret, self.purpose).encrypt(plaintext)

    def open(self, sealed: bytes) -> bytes:
        try:
            return _derive(self.secret, self.purpose).decrypt(sealed)
        except InvalidToken as exc:
            raise SealError() from exc
