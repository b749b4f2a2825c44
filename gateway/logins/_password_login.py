"""Step one of a login: identifier + password, throttled, audited, without user enumeration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins._accounts import find_user_for_login
from gateway.logins._errors import AccountNotActive, InvalidCredentials, LockedOut
from gateway.logins._history import METHOD_PASSWORD, record_login
from gateway.logins._passwords import check_password, hash_password
from gateway.logins._settings import LoginSettings
from gateway.regulation._throttles import (
    account_key,
    address_key,
    check_locks,
    clear,
    count_failure,
    identifier_key,
)
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
                    session,
                    account=account,
                    client_addr=client_addr,
                    limits=settings.limits,
                    now=now,
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
                    clear(session, account)
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
