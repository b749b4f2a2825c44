"""Password hashing (argon2id, argon2-cffi) and the rules for a new password.

Rules follow NIST SP 800-63B §5.1.1.2: a minimum length and a check against the
obvious (the broker's own email or broker number, one repeated character), no
composition rules, no forced rotation.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.logins._errors import PasswordRejected

# argon2-cffi's defaults are RFC 9106's "second recommended" profile (argon2id, t=3,
# m=64 MiB, p=4). When the library raises them, check_needs_rehash() tells us and the next
# successful login re-hashes: parameters follow the library without a migration.
_HASHER = PasswordHasher()
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; this only stops absurd request bodies


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (salted, parameters encoded in the string)."""
    return _HASHER.hash(password)


@cache
def _dummy_hash() -> str:
    # Made once per process with the current parameters, so verifying against it costs
    # exactly what a real verification costs.
    return _HASHER.hash("brokergate dummy password for unknown accounts")


def check_password(stored_hash: str | None, password: str) -> tuple[bool, bool]:
    """Verify ``password``; returns ``(ok, needs_rehash)``.

    With no stored hash (unknown account, account without a password) the password is
    verified against a dummy hash and fails: the answer takes as long as for a real
    account, so the timing does not tell which accounts exist.
    """
    # SECURITY: always run one argon2 verification, whether or not the account exists.
    target = stored_hash or _dummy_hash()
    try:
        _HASHER.verify(target, password[:MAX_PASSWORD_LENGTH])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    if stored_hash is None:
        return False, False
    return True, _HASHER.check_needs_rehash(stored_hash)


def validate_new_password(
    password: str, repeat: str, *, min_length: int, forbidden: tuple[str, ...] = ()
) -> None:
    """Check a password the broker chose.

    Args:
        forbidden: values the password must not be (email, broker number), compared
            case-insensitively.

    Raises:
        PasswordRejected: with ``reason`` "mismatch", "too_short", "too_long",
            "too_simple" or "personal".
    """
    if password != repeat:
        raise PasswordRejected("mismatch")
    if len(password) < min_length:
        raise PasswordRejected("too_short", min_length=min_length)
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected("too_long", max_length=MAX_PASSWORD_LENGTH)
    if len(set(password)) < 3:
        raise PasswordRejected("too_simple")
    lowered = password.strip().lower()
    if any(lowered == value.strip().lower() for value in forbidden if value):
        raise PasswordRejected("personal")
