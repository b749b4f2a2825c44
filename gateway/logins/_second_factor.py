"""Step two of a password login: a TOTP code or a recovery code, throttled like the password."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from gateway.logins._errors import LockedOut, SecondFactorInvalid
from gateway.logins._history import METHOD_RECOVERY, METHOD_TOTP, record_login
from gateway.logins._settings import LoginSettings
from gateway.logins._totp import check_totp, use_recovery_code
from gateway.regulation._throttles import account_key, address_key, check_locks, count_failure
from store import Sealer, User, record_audit, transaction


def verify_second_factor(
    sessions: sessionmaker[Session],
    *,
    user_id: int,
    code: str,
    client_addr: str | None,
    sealer: Sealer,
    settings: LoginSettings,
    now: datetime,
    record: bool = True,
) -> str:
    """Check a 6-digit TOTP code, or a recovery code, for ``user_id``.

    The caller has already checked the password (login) or holds a session of this user
    (step-up). Failures count against the same account lockout as wrong passwords, so
    the 10**6 codes cannot be tried at leisure.

    Args:
        record: note the login in the user's history (False for a step-up that only
            re-confirms a factor inside a running session).

    Returns:
        The method: "totp" or "recovery-code".

    Raises:
        LockedOut: too many failures for this account or address.
        SecondFactorInvalid: wrong, expired or already used code.
    """
    failure: Exception | None = None
    with transaction(sessions) as session:
        user = session.get(User, user_id, with_for_update=True)
        account = account_key(user_id)
        keys = [account] + ([address_key(client_addr)] if client_addr else [])
        until = check_locks(session, keys, now)
        method: str | None = None
        if until is not None:
            failure = LockedOut(until)
        elif user is not None:
            compact = "".join(code.split())
            if compact.isdigit():
                method = METHOD_TOTP if check_totp(session, user, compact, sealer, now) else None
            elif use_recovery_code(session, user, code, now):
                method = METHOD_RECOVERY
        if method is not None and user is not None:
            if record:
                record_login(user, method, now)
            record_audit(
                session,
                actor=f"user:{user_id}",
                action="login.second_factor",
                now=now,
                user_id=user_id,
                client_addr=client_addr,
                details={"method": method},
            )
            return method
        if failure is None:
            locked = count_failure(
                session,
                account=account,
                client_addr=client_addr,
                limits=settings.limits,
                now=now,
            )
            failure = LockedOut(locked) if locked else SecondFactorInvalid()
        record_audit(
            session,
            actor=f"user:{user_id}",
            action="login.second_factor",
            outcome="locked" if isinstance(failure, LockedOut) else "failed",
            now=now,
            user_id=user_id,
            client_addr=client_addr,
        )
    raise failure
