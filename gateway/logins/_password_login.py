"""Step one of a login: identifier + password, throttled, audited, without user enumeration."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import login_refusal
from gateway._errors import LoginRefused
from gateway.logins._accounts import find_user_for_login
from gateway.logins._devices import is_remembered
from gateway.logins._errors import InvalidCredentials, LockedOut
from gateway.logins._history import METHOD_PASSWORD, record_login
from gateway.logins._passwords import check_password, hash_password
from gateway.logins._settings import LoginSettings
from gateway.regulation._throttles import (
    account_key,
    check_locks,
    clear_account,
    count_failure,
    identifier_key,
    login_lock_keys,
)
from store import PasskeyCredential, User, record_audit, transaction

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
    device_token: str | None = None,
    certificate_user_id: int | None = None,
) -> PasswordAccepted:
    """Check identifier (email or broker number) and password.

    Args:
        device_token: the browser's remembered-device cookie, if any.
        certificate_user_id: the user of a valid certificate on this connection, if any.
            With either of the account's own, the global back-off per account does not
            apply (``gateway.regulation._throttles.login_lock_keys``).

    Failures are counted and audited in their own committed transaction before the
    error is raised, so a failed attempt always leaves its trace.

    Raises:
        LockedOut: the account or the client address is locked; ``until`` says when
            to try again. Checked before the password, for known and unknown
            identifiers alike.
        InvalidCredentials: unknown identifier, wrong password, or an account
            without a password (not activated yet): one message for all three.
        LoginRefused: the password is right but the user may not log in
            (``ca.login_refusal``: user or office deactivated, issue 13).
    """
    failure: Exception | None = None
    with transaction(sessions) as session:
        user = find_user_for_login(session, identifier)
        account = account_key(user.id) if user else identifier_key(identifier)
        trusted = user is not None and (
            certificate_user_id == user.id
            or is_remembered(session, token=device_token, user_id=user.id, now=now)
        )
        keys = login_lock_keys(account, client_addr, trusted=trusted)
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
                    trusted=trusted,
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
                refusal = login_refusal(user)
                if refusal is not None:
                    record_audit(
                        session,
                        actor=f"user:{user.id}",
                        action="login.password",
                        outcome="refused",
                        now=now,
                        user_id=user.id,
                        client_addr=client_addr,
                        details={"reason": refusal.reason},
                    )
                    failure = LoginRefused(refusal, user_id=user.id)
                else:
                    if needs_rehash:
                        user.password_hash = hash_password(password)
                    clear_account(session, account, client_addr)
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
