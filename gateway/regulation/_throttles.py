"""Every throttle decision of the logins, over the counters and the limits table.

Keys name what is counted (``login:account:<id>`` from every address,
``login:account:<id>@<address>`` per account and address, ``login:addr:<address>``, a hash
for identifiers that match no account, so that they lock out exactly like real ones). The
decisions about TAN mails, TAN entries and downloads are pure functions of what the
caller read from the store, the limits and the clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from gateway.regulation import _counters as counters
from gateway.regulation._limits import Limits

__all__ = [
    "account_address_key",
    "account_key",
    "address_key",
    "check_locks",
    "clear",
    "clear_account",
    "count_address_failure",
    "count_failure",
    "identifier_key",
    "login_lock_keys",
    "next_download_at",
    "next_tan_mail_at",
    "tan_entry_exhausted",
]


def account_key(user_id: int) -> str:
    return f"login:account:{user_id}"


def identifier_key(identifier: str) -> str:
    """The key of a typed identifier that matches no account.

    SECURITY: counted under a hash, so the audit and this table never collect what people
    typed; unknown identifiers lock out exactly like real accounts (no enumeration).
    """
    digest = hashlib.sha256(identifier.strip().lower().encode()).hexdigest()[:40]
    return f"login:ident:{digest}"


def address_key(client_addr: str) -> str:
    return f"login:addr:{client_addr}"


def account_address_key(account: str, client_addr: str | None) -> str:
    """The key of ``account`` (``account_key``/``identifier_key``) from one address."""
    return f"{account}@{client_addr or '-'}"


def login_lock_keys(account: str, client_addr: str | None, *, trusted: bool) -> list[str]:
    """The keys whose locks hold up a login attempt for ``account`` from ``client_addr``.

    Args:
        trusted: the attempt comes with the broker's own remembered browser or certificate;
            SECURITY (issue 17): the global back-off per account, which strangers can
            trigger from many addresses, does not apply to it (OWASP "device cookies").
            The per-(account, address) and per-address locks still do.
    """
    keys = [account_address_key(account, client_addr)]
    if client_addr:
        keys.append(address_key(client_addr))
    if not trusted:
        keys.append(account)
    return keys


def check_locks(session: Session, keys: Sequence[str], now: datetime) -> datetime | None:
    """The latest lockout end among ``keys``, or ``None`` if none is locked."""
    ends = [end for key in keys if (end := counters.check(session, key, now)) is not None]
    return max(ends) if ends else None


def count_failure(
    session: Session,
    *,
    account: str,
    client_addr: str | None,
    limits: Limits,
    now: datetime,
    trusted: bool = False,
) -> datetime | None:
    """Count a failed attempt for the account from this address, for the account from
    every address, and for the address; the end of a lockout this attempt now faces
    (``trusted``: as :func:`login_lock_keys`), if any."""
    pair = counters.register_failure(
        session, account_address_key(account, client_addr), limits.per_account_address, now
    )
    overall = counters.register_failure(session, account, limits.per_account, now)
    ends = [pair] if trusted else [pair, overall]
    if client_addr:
        ends.append(
            counters.register_failure(session, address_key(client_addr), limits.per_address, now)
        )
    locked = [end for end in ends if end is not None]
    return max(locked) if locked else None


def count_address_failure(
    session: Session, client_addr: str | None, limits: Limits, now: datetime
) -> None:
    """Count a failure against the client address only (a wrong broker number or TAN)."""
    if client_addr:
        counters.register_failure(session, address_key(client_addr), limits.per_address, now)


def clear(session: Session, key: str) -> None:
    """Forget ``key``'s failures."""
    counters.clear(session, key)


def clear_account(session: Session, account: str, client_addr: str | None) -> None:
    """A successful login: forget the account's failures from this address.

    The global count is left to run out with its window: the broker's own login (from a
    remembered browser, say) must not reopen guessing from every other address.
    """
    counters.clear(session, account_address_key(account, client_addr))


def next_tan_mail_at(sent: Sequence[datetime], limits: Limits, now: datetime) -> datetime | None:
    """When the next TAN mail may go out, or ``None`` if one may go out now.

    Args:
        sent: when the broker's TAN mails within ``limits.tan_mail_window`` before ``now``
            were created.
    """
    if sent and max(sent) + limits.tan_resend_interval > now:
        return max(sent) + limits.tan_resend_interval
    if len(sent) >= limits.tan_mails_per_window:
        return min(sent) + limits.tan_mail_window
    return None


def tan_entry_exhausted(wrong_entries: int, limits: Limits) -> bool:
    """True once a TAN has been entered wrongly ``tan_max_attempts`` times: it is void."""
    return wrong_entries >= limits.tan_max_attempts


def next_download_at(issued: Sequence[datetime], limits: Limits) -> datetime | None:
    """When the broker may download the next certificate, or ``None`` if now.

    Args:
        issued: when the broker's own downloads within ``limits.download_window`` were
            issued.
    """
    recent = sorted(issued)
    if len(recent) < limits.downloads_per_window:
        return None
    return recent[-limits.downloads_per_window] + limits.download_window


def recovery_address_key(client_addr: str) -> str:
    """The counter of recovery requests (reset link, activation mail) from one address."""
    return f"recovery:addr:{client_addr}"


def recovery_mail_allowed(sent: Sequence[datetime], limits: Limits) -> bool:
    """Whether another recovery mail may go to an account.

    Args:
        sent: when the account's recovery mails within ``limits.recovery_mail_window``
            were created.
    """
    return len(sent) < limits.recovery_mails_per_window
