"""Step 1 of the 2FA set-up (issue 14, seed 000 "Einmalig mit Code per E-Mail verifizieren"):
a 6-digit code mailed to the user's address confirms once that the person setting up (or
replacing) a second factor reads the broker's mailbox, on top of the password-proven session.

The code is never stored: the web session's data keeps its HMAC (see _tokens), bound to the
user and to the session, so a code read in one session is worthless in another. It is valid
:data:`SETUP_CODE_VALIDITY`; after ``limits.tan_max_attempts`` wrong entries it is void and a
new one must be requested. Mails are throttled per user like TAN mails
(``limits.tan_resend_interval``, ``tan_mails_per_window``), counted over the outbox, so a new
session does not reset the count.

The session-data record (JSON)::

    {"user_id": 7, "hash": "<hex>", "expires_at": "<iso>", "attempts": 0}

and, once the code was right, :data:`SETUP_VERIFIED_KEY` holds
``{"user_id": 7, "at": "<iso>"}`` until a factor is enrolled (then it is consumed) or
:data:`SETUP_VERIFIED_FOR` has passed.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins._errors import TooSoon
from gateway.logins._tokens import keyed_hash, same
from gateway.regulation._limits import Limits
from gateway.regulation._throttles import (
    count_address_failure,
    next_tan_mail_at,
    tan_entry_exhausted,
)
from store import MailOutbox, Sealer, User, queue_mail, record_audit, transaction

SETUP_CODE_KEY = "twofa_setup.code"  # session data: the mailed code's record
SETUP_VERIFIED_KEY = "twofa_setup.verified"  # session data: step 1 passed
SETUP_CODE_KEY_PURPOSE = "twofa-setup-code"  # HKDF purpose of the hashing key
SETUP_CODE_DIGITS = 6  # seed 000; 5 guesses of 10**6 values: 1 in 200,000 per code
SETUP_CODE_VALIDITY = timedelta(minutes=15)  # as a TAN: time to switch to the mailbox
# Time to install an authenticator app (or find the security key) after step 1.
SETUP_VERIFIED_FOR = timedelta(minutes=30)
MAIL_KIND = "twofa_setup_code"  # the outbox rows the throttle counts


def new_setup_code() -> str:
    return f"{secrets.randbelow(10**SETUP_CODE_DIGITS):0{SETUP_CODE_DIGITS}d}"


def setup_code_hash(key: bytes, *, user_id: int, session_id: str, code: str) -> str:
    """The HMAC of ``code`` bound to the user and the web session.

    SECURITY: bound to both, a code mailed for one session (or user) never matches in
    another, even if a record were copied between sessions.
    """
    return keyed_hash(key, f"{user_id}:{session_id}:{''.join(code.split())}")


def send_setup_code(
    sessions: sessionmaker[Session],
    *,
    user_id: int,
    session_id: str,
    key: bytes,
    mail_sealer: Sealer,
    limits: Limits,
    client_addr: str | None,
    now: datetime,
    language: str | None = None,
) -> dict[str, Any]:
    """Mail a new code to the user's address (in ``language``, else the user's locale).

    Returns:
        The record to keep under :data:`SETUP_CODE_KEY` (it replaces an earlier one, so
        only the newest code counts).

    Raises:
        TooSoon: a code was mailed less than ``tan_resend_interval`` ago, or too many in
            ``tan_mail_window``; ``until`` says when the next one can go out.
    """
    with transaction(sessions) as session:
        user = session.get(User, user_id, with_for_update=True)
        assert user is not None  # the session's own user
        sent = list(
            session.scalars(
                select(MailOutbox.created_at).where(
                    MailOutbox.user_id == user_id,
                    MailOutbox.kind == MAIL_KIND,
                    MailOutbox.created_at > now - limits.tan_mail_window,
                )
            )
        )
        next_at = next_tan_mail_at(sent, limits, now)
        if next_at is not None:
            record_audit(
                session,
                actor=f"user:{user_id}",
                action="twofa.setup.code_sent",
                outcome="failed",
                now=now,
                user_id=user_id,
                client_addr=client_addr,
                details={"reason": "too_soon"},
            )
            failure = TooSoon("a set-up code", next_at)
        else:
            code = new_setup_code()
            queue_mail(
                session,
                kind=MAIL_KIND,
                to_addr=user.email,
                locale=language or user.locale,
                template="twofa_setup_code",
                context={
                    "name": user.name,
                    "valid_minutes": int(SETUP_CODE_VALIDITY.total_seconds() // 60),
                },
                secrets={"code": code},
                sealer=mail_sealer,
                now=now,
                user_id=user_id,
            )
            record_audit(
                session,
                actor=f"user:{user_id}",
                action="twofa.setup.code_sent",
                now=now,
                user_id=user_id,
                client_addr=client_addr,
            )
            return {
                "user_id": user_id,
                "hash": setup_code_hash(key, user_id=user_id, session_id=session_id, code=code),
                "expires_at": (now + SETUP_CODE_VALIDITY).isoformat(),
                "attempts": 0,
            }
    raise failure


@dataclass(frozen=True, kw_only=True)
class CodeCheck:
    """The outcome of one entry: ``why`` is None when the code was right; ``record`` is
    what to keep under :data:`SETUP_CODE_KEY` afterwards (None: remove it)."""

    why: str | None
    record: dict[str, Any] | None
    attempts_left: int = 0


def check_setup_code(
    record: Any,
    *,
    code: str,
    user_id: int,
    session_id: str,
    key: bytes,
    limits: Limits,
    now: datetime,
) -> CodeCheck:
    """Compare ``code`` with the session's ``record`` (pure: the caller stores the result).

    ``why``: ``missing`` (no code requested in this session for this user), ``expired``,
    ``exhausted`` (too many wrong entries: the code is void) or ``wrong``.
    """
    if not isinstance(record, Mapping) or record.get("user_id") != user_id:
        return CodeCheck(why="missing", record=None)
    attempts = int(record.get("attempts", 0))
    if datetime.fromisoformat(str(record["expires_at"])) <= now:
        return CodeCheck(why="expired", record=None)
    if tan_entry_exhausted(attempts, limits):
        return CodeCheck(why="exhausted", record=None)
    expected = setup_code_hash(key, user_id=user_id, session_id=session_id, code=code)
    if same(expected, str(record["hash"])):
        return CodeCheck(why=None, record=None)
    attempts += 1
    if tan_entry_exhausted(attempts, limits):
        return CodeCheck(why="exhausted", record=None)
    return CodeCheck(
        why="wrong",
        record={**record, "attempts": attempts},
        attempts_left=limits.tan_max_attempts - attempts,
    )


def audit_code_entry(
    sessions: sessionmaker[Session],
    *,
    user_id: int,
    check: CodeCheck,
    limits: Limits,
    client_addr: str | None,
    now: datetime,
) -> None:
    """Record one entry in the audit; a failed one also counts against the address."""
    with transaction(sessions) as session:
        if check.why is not None:
            count_address_failure(session, client_addr, limits, now)
        record_audit(
            session,
            actor=f"user:{user_id}",
            action="twofa.setup.code_confirm",
            outcome="ok" if check.why is None else "failed",
            now=now,
            user_id=user_id,
            client_addr=client_addr,
            details={"reason": check.why} if check.why else None,
        )


def verified_record(user_id: int, now: datetime) -> dict[str, Any]:
    return {"user_id": user_id, "at": now.isoformat()}


def is_verified(record: Any, *, user_id: int, now: datetime) -> bool:
    """Step 1 was passed in this session by ``user_id`` within :data:`SETUP_VERIFIED_FOR`."""
    if not isinstance(record, Mapping) or record.get("user_id") != user_id:
        return False
    at = datetime.fromisoformat(str(record.get("at")))
    return now - at <= SETUP_VERIFIED_FOR
