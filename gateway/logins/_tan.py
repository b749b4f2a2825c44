"""Broker-number login (seed 001): broker number + email → a TAN by mail → ``basic``.

Messages follow the seed: an unknown broker number gets "Diese Vermittlernummer ist
ungültig."; a known number with another email gets "Unbekannte E-Mail-Adresse …" and the
choice to go on without email, as a ``restricted`` session. (This tells a visitor which
broker numbers exist; the portal's brokers rely on that answer, and the number alone opens
nothing above ``restricted``. Attempts are throttled per client address.)

TANs are 8 digits: typed easily on any device, and with at most 5 tries per TAN the
chance of guessing one is 5 in 10**8. They are stored as an HMAC (see _tokens), valid 15
minutes, single use; only the newest TAN of a broker is valid.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from ca import login_refusal
from gateway._errors import LoginRefused
from gateway.logins._accounts import find_organisation, normalise_email, primary_user
from gateway.logins._devices import recognise_device, remember_device
from gateway.logins._errors import (
    InvalidBrokerNumber,
    LockedOut,
    TanInvalid,
    TooSoon,
    UnknownEmail,
)
from gateway.logins._history import METHOD_DEVICE, METHOD_EMAIL_TAN, record_login
from gateway.logins._settings import LoginSettings
from gateway.logins._tokens import keyed_hash, same
from gateway.regulation._throttles import (
    address_key,
    check_locks,
    count_address_failure,
    next_tan_mail_at,
    tan_entry_exhausted,
)
from store import EmailTan, Sealer, User, queue_mail, record_audit, transaction

TAN_DIGITS = 8
TAN_KEY_PURPOSE = "email-tan"  # HKDF purpose of the TAN hashing key (_tokens.derive_key)


@dataclass(frozen=True, kw_only=True)
class TanSent:
    """A TAN is on its way to ``email``; keep ``tan_id`` in the session for the next step."""

    tan_id: int
    user_id: int
    email: str
    expires_at: datetime


@dataclass(frozen=True, kw_only=True)
class DeviceRecognised:
    """This browser was remembered after an earlier TAN: ``basic`` without a mail."""

    user_id: int


@dataclass(frozen=True, kw_only=True)
class TanConfirmed:
    user_id: int
    device_token: str | None  # set when the browser is to be remembered: the cookie value


@dataclass(frozen=True, kw_only=True)
class RestrictedLogin:
    """Broker number without a confirmed email: calculators yes, applications no (seed 001).

    Nobody proved to be a particular user. The session is attributed to the firm's primary
    user (``user_id``) because the upstream identifies the firm through it, but only at
    ``restricted``: the account pages (``basic``) and the login history stay out of reach.
    """

    broker_number: str
    organisation_id: int
    user_id: int


def new_tan() -> str:
    return f"{secrets.randbelow(10**TAN_DIGITS):0{TAN_DIGITS}d}"


def _address_guard(session: Session, client_addr: str | None, now: datetime) -> None:
    if client_addr:
        until = check_locks(session, [address_key(client_addr)], now)
        if until is not None:
            raise LockedOut(until)


def _audit_fail(
    session: Session,
    action: str,
    reason: str,
    client_addr: str | None,
    now: datetime,
    **extra: object,
) -> None:
    record_audit(
        session,
        actor="anonymous",
        action=action,
        outcome="failed",
        now=now,
        client_addr=client_addr,
        details={"reason": reason, **extra},
    )


def _resolve(
    session: Session,
    *,
    broker_number: str,
    email: str,
    client_addr: str | None,
    settings: LoginSettings,
    now: datetime,
    action: str,
) -> tuple[User | None, Exception | None]:
    org = find_organisation(session, broker_number)
    if org is None:
        count_address_failure(session, client_addr, settings.limits, now)
        _audit_fail(session, action, "invalid_broker_number", client_addr, now)
        return None, InvalidBrokerNumber(broker_number)
    address = normalise_email(email)
    user = session.scalar(
        select(User).where(User.organisation_id == org.id, func.lower(User.email) == address)
    )
    if user is None:
        count_address_failure(session, client_addr, settings.limits, now)
        _audit_fail(
            session, action, "unknown_email", client_addr, now, broker_number=org.broker_number
        )
        return None, UnknownEmail(email.strip(), org.broker_number)
    refusal = login_refusal(user)
    if refusal is not None:
        _audit_fail(session, action, refusal.reason, client_addr, now)
        return None, LoginRefused(refusal, user_id=user.id)
    return user, None


def start_broker_login(
    sessions: sessionmaker[Session],
    *,
    broker_number: str,
    email: str,
    device_token: str | None,
    client_addr: str | None,
    settings: LoginSettings,
    tan_key: bytes,
    mail_sealer: Sealer,
    now: datetime,
    language: str | None = None,
) -> TanSent | DeviceRecognised:
    """First step: check number and email; recognise the browser or mail a TAN (in
    ``language``, the one the broker chose on the page, else the user's locale).

    Raises:
        InvalidBrokerNumber, UnknownEmail: as in seed 001.
        LoginRefused: the user may not log in (``ca.login_refusal``, issue 13).
        LockedOut: this client address made too many failed attempts.
        TooSoon: a TAN was mailed less than ``tan_resend_interval`` ago, or too many
            in one window; ``until`` says when the next one can be sent.
    """
    failure: Exception | None = None
    with transaction(sessions) as session:
        _address_guard(session, client_addr, now)
        user, failure = _resolve(
            session,
            broker_number=broker_number,
            email=email,
            client_addr=client_addr,
            settings=settings,
            now=now,
            action="login.tan.start",
        )
        if user is not None:
            if recognise_device(session, token=device_token, user_id=user.id, now=now):
                record_login(user, METHOD_DEVICE, now)
                record_audit(
                    session,
                    actor=f"user:{user.id}",
                    action="login.device",
                    now=now,
                    user_id=user.id,
                    client_addr=client_addr,
                )
                return DeviceRecognised(user_id=user.id)
            recent = list(
                session.scalars(
                    select(EmailTan.created_at).where(
                        EmailTan.user_id == user.id,
                        EmailTan.created_at > now - settings.limits.tan_mail_window,
                    )
                )
            )
            next_at = next_tan_mail_at(recent, settings.limits, now)
            if next_at is not None:
                failure = TooSoon("a TAN", next_at)
            if failure is not None:
                _audit_fail(session, "login.tan.start", "too_soon", client_addr, now)
            else:
                return _send_tan(
                    session,
                    user=user,
                    settings=settings,
                    tan_key=tan_key,
                    mail_sealer=mail_sealer,
                    client_addr=client_addr,
                    now=now,
                    language=language,
                )
    assert failure is not None
    raise failure


def _send_tan(
    session: Session,
    *,
    user: User,
    settings: LoginSettings,
    tan_key: bytes,
    mail_sealer: Sealer,
    client_addr: str | None,
    now: datetime,
    language: str | None = None,
) -> TanSent:
    # Only the newest TAN counts: void the earlier ones so "resend" does not multiply guesses.
    session.execute(
        update(EmailTan)
        .where(EmailTan.user_id == user.id, EmailTan.used_at.is_(None), EmailTan.expires_at > now)
        .values(expires_at=now)
    )
    tan = new_tan()
    row = EmailTan(
        user_id=user.id,
        tan_hash=keyed_hash(tan_key, tan),
        created_at=now,
        expires_at=now + settings.tan_validity,
        attempts=0,
    )
    session.add(row)
    session.flush()
    queue_mail(
        session,
        kind="email_tan",
        to_addr=user.email,
        locale=language or user.locale,
        template="email_tan",
        context={
            "name": user.name,
            "broker_number": user.organisation.broker_number,
            "valid_minutes": int(settings.tan_validity.total_seconds() // 60),
        },
        secrets={"tan": tan},
        sealer=mail_sealer,
        now=now,
        user_id=user.id,
    )
    record_audit(
        session,
        actor=f"user:{user.id}",
        action="login.tan.sent",
        now=now,
        user_id=user.id,
        client_addr=client_addr,
        details={"tan_id": row.id},
    )
    return TanSent(tan_id=row.id, user_id=user.id, email=user.email, expires_at=row.expires_at)


def confirm_tan(
    sessions: sessionmaker[Session],
    *,
    tan_id: int,
    tan: str,
    remember: bool,
    device_label: str | None,
    client_addr: str | None,
    settings: LoginSettings,
    tan_key: bytes,
    now: datetime,
) -> TanConfirmed:
    """Second step: the TAN from the mail. Success logs the broker in at ``basic``.

    Raises:
        TanInvalid: unknown, wrong, expired, used, or out of attempts (each wrong entry
            is counted; the TAN is void after ``tan_max_attempts``).
        LockedOut: this client address made too many failed attempts.
    """
    failure: Exception | None = None
    with transaction(sessions) as session:
        _address_guard(session, client_addr, now)
        row = session.get(EmailTan, tan_id, with_for_update=True, populate_existing=True)
        why: str | None = None
        if row is None:
            why = "unknown"
        elif row.used_at is not None:
            why = "used"
        elif row.expires_at <= now:
            why = "expired"
        elif tan_entry_exhausted(row.attempts, settings.limits):
            why = "exhausted"
        elif not same(keyed_hash(tan_key, "".join(tan.split())), row.tan_hash):
            row.attempts += 1
            why = "exhausted" if tan_entry_exhausted(row.attempts, settings.limits) else "wrong"
        if why is not None:
            count_address_failure(session, client_addr, settings.limits, now)
            record_audit(
                session,
                actor=f"user:{row.user_id}" if row else "anonymous",
                action="login.tan.confirm",
                outcome="failed",
                now=now,
                user_id=row.user_id if row else None,
                client_addr=client_addr,
                details={"reason": why, "tan_id": tan_id},
            )
            failure = TanInvalid(why)
        else:
            assert row is not None
            row.used_at = now
            user = session.get(User, row.user_id)
            assert user is not None
            refusal = login_refusal(user)
            if refusal is not None:
                failure = LoginRefused(refusal, user_id=user.id)
            else:
                record_login(user, METHOD_EMAIL_TAN, now)
                token = (
                    remember_device(
                        session,
                        user_id=user.id,
                        label=device_label,
                        validity=settings.remember_device_for,
                        now=now,
                    )
                    if remember
                    else None
                )
                record_audit(
                    session,
                    actor=f"user:{user.id}",
                    action="login.tan.confirm",
                    now=now,
                    user_id=user.id,
                    client_addr=client_addr,
                    details={"tan_id": tan_id, "device_remembered": token is not None},
                )
                return TanConfirmed(user_id=user.id, device_token=token)
    assert failure is not None
    raise failure


def restricted_login(
    sessions: sessionmaker[Session],
    *,
    broker_number: str,
    email: str,
    client_addr: str | None,
    now: datetime,
) -> RestrictedLogin:
    """ "Continue without email" after :class:`UnknownEmail` (seed 001): ``restricted``.

    Raises:
        InvalidBrokerNumber: the number does not exist (no restricted session for it).
        LoginRefused: the firm's user may not log in (``ca.login_refusal``, issue 13).
    """
    with transaction(sessions) as session:
        _address_guard(session, client_addr, now)
        org = find_organisation(session, broker_number)
        user = primary_user(session, org) if org is not None else None
        refusal = login_refusal(user) if user is not None else None
        failure: Exception
        if org is None or user is None:
            _audit_fail(session, "login.restricted", "invalid_broker_number", client_addr, now)
            failure = InvalidBrokerNumber(broker_number)
        elif refusal is not None:
            # Issue 13: the firm's session stands on this user; an inactive head office
            # (or user) lets nobody in, not even without a TAN.
            _audit_fail(session, "login.restricted", refusal.reason, client_addr, now)
            failure = LoginRefused(refusal, user_id=user.id)
        else:
            record_audit(
                session,
                actor="anonymous",
                action="login.restricted",
                now=now,
                user_id=user.id,
                client_addr=client_addr,
                details={"broker_number": org.broker_number, "email_given": bool(email.strip())},
            )
            return RestrictedLogin(
                broker_number=org.broker_number, organisation_id=org.id, user_id=user.id
            )
    raise failure
