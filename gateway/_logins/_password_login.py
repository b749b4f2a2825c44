"""Step one of a login: identifier + password, throttled, audited, without user enumeration."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway._logins import _ratelimit as rl
from gateway._logins._accounts import find_user_for_login
from gateway._logins._errors import AccountNotActive, InvalidCredentials, LockedOut
from gateway._logins._history import METHOD_PASSWORD, record_login
from gateway._logins._passwords import check_password, hash_password
from gateway._logins._settings import LoginSettings
from store import PasskeyCredential, User, UserStatus, record_audit, transaction

SECOND_FACTOR_TOTP = "totp"
SECOND_FACTOR_PASSKEY = "passkey"


@dataclass(frozen=True, kw_only=True)
class PasswordAccepted:
    """The password was right.

    ``second_factors`` empty: the broker is logged in at ``basic`` (and the login is
    recorded). Otherwise the session must stay anonymous until one of these factors
    ("totp", "passkey") is presented: an enrolled second factor is never optional.
    """

    user_id: int
    second_factors: tuple[str, ...]

    @property
    def needs_second_factor(self) -> bool:
        return bool(self.second_factors)


def account_key(user_id: int) -> str:
    return f"login:account:{user_id}"


def identifier_key(identifier: str) -> str:
    # Unknown identifiers are counted too (under a hash: the audit and this table must not
    # collect what people typed), so that they lock out exactly like real accounts.
    digest = hashlib.sha256(identifier.strip().lower().encode()).hexdigest()[:40]
    return f"login:ident:{digest}"


def address_key(client_addr: str) -> str:
    return f"login:addr:{client_addr}"


def account_policy(settings: LoginSettings) -> rl.RatePolicy:
    return rl.RatePolicy(
        limit=settings.failures_per_account,
        window=settings.failure_window,
        lockout=settings.lockout,
    )


def address_policy(settings: LoginSettings) -> rl.RatePolicy:
    return rl.RatePolicy(
        limit=settings.failures_per_address,
        window=settings.failure_window,
        lockout=settings.lockout,
    )


def check_locks(session: Session, keys: list[str], now: datetime) -> datetime | None:
    """The latest lockout end among ``keys``, or ``None`` if none is locked."""
    ends = [end for key in keys if (end := rl.check(session, key, now)) is not None]
    return max(ends) if ends else None


def count_failure(
    session: Session,
    *,
    account: str,
    client_addr: str | None,
    settings: LoginSettings,
    now: datetime,
) -> datetime | None:
    """Count a failed attempt for the account and the address; the lockout end, if any."""
    ends = [rl.register_failure(session, account, account_policy(settings), now)]
    if client_addr:
        ends.append(
            rl.register_failure(session, address_key(client_addr), address_policy(settings), now)
        )
    locked = [end for end in ends if end is not None]
    return max(locked) if locked else None


def second_factors_of(session: Session, user: User) -> tuple[str, ...]:
    factors: list[str] = []
    if user.totp_confirmed_at is not None:
        factors.append(SECOND_FACTOR_TOTP)
    if session.scalar(select(PasskeyCredential.id).where(PasskeyCredential.user_id == user.id)):
        factors.append(SECOND_FACTOR_PASSKEY)
    return tuple(factors)


def login_with_password(
    sessions: sessionmaker[Session],
    *,
    identifier: str,
    password: str,
    client_addr: str | None,
    settings: LoginSettings,
    now: datetime,
) -> PasswordAccepted:
    """Check identifier (email or broker number) and password.

    Failures are counted and audited in their own committed transaction before the
    error is raised, so a failed attempt always leaves its trace.

    Raises:
        LockedOut: the account or the client address is locked; ``until`` says when
            to try again. Checked before the password, for known and unknown
            identifiers alike.
        InvalidCredentials: unknown identifier, wrong password, or an account
            without a password (not activated yet): one message for all three.
        AccountNotActive: the password is right but the account is disabled.
    """
    failure: Exception | None = None
    with transaction(sessions) as session:
        user = find_user_for_login(session, identifier)
        account = account_key(user.id) if user else identifier_key(identifier)
        keys = [account] + ([address_key(client_addr)] if client_addr else [])
        until = check_locks(session, keys, now)
        if until is not None:
            record_audit(
                session,
                actor=f"user:{user.id}" if user else "anonymous",
                action="login.password",
                outcome="locked",
                now=now,
                user_id=user.id if user else None,
                client_addr=client_addr,
                details={"locked_until": until.isoformat()},
            )
            failure = LockedOut(until)
        else:
            ok, needs_rehash = check_password(user.password_hash if user else None, password)
            if not ok:
                locked = count_failure(
                    session, account=account, client_addr=client_addr, settings=settings, now=now
                )
                record_audit(
                    session,
                    actor=f"user:{user.id}" if user else "anonymous",
                    action="login.password",
                    outcome="failed",
                    now=now,
                    user_id=user.id if user else None,
                    client_addr=client_addr,
                    details={
                        "reason": "unknown_account" if user is None else "wrong_password",
                        **({"locked_until": locked.isoformat()} if locked else {}),
                    },
                )
                failure = LockedOut(locked) if locked else InvalidCredentials()
            else:
                assert user is not None
                if user.status != UserStatus.ACTIVE:
                    record_audit(
                        session,
                        actor=f"user:{user.id}",
                        action="login.password",
                        outcome="refused",
                        now=now,
                        user_id=user.id,
                        client_addr=client_addr,
                        details={"reason": f"account_{user.status.value}"},
                    )
                    failure = AccountNotActive(user.status.value)
                else:
                    if needs_rehash:
                        user.password_hash = hash_password(password)
                    rl.clear(session, account)
                    factors = second_factors_of(session, user)
                    if not factors:
                        record_login(user, METHOD_PASSWORD, now)
                    record_audit(
                        session,
                        actor=f"user:{user.id}",
                        action="login.password",
                        now=now,
                        user_id=user.id,
                        client_addr=client_addr,
                        details={"second_factor_required": bool(factors), "rehashed": needs_rehash},
                    )
                    return PasswordAccepted(user_id=user.id, second_factors=factors)
    assert failure is not None
    raise failure
