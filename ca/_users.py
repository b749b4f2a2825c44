"""Brokers as the CA knows them: validation, creation and lookup of users.

Broker numbers have the portal's format NN/NNN/NNNN (seed 001, e.g. 60/123/4567).
"""

from __future__ import annotations

import re
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca._errors import (
    DuplicateUser,
    InvalidBrokerNumber,
    InvalidEmail,
    InvalidLocale,
    InvalidUserData,
    UnknownUser,
)
from store import Organisation, User, UserRole, UserStatus, record_audit

BROKER_NUMBER = re.compile(r"^\d{2}/\d{3}/\d{4}$")
LOCALES = ("de", "en", "nl")


def validate_broker_number(value: str) -> str:
    """The broker number, stripped; raises :class:`InvalidBrokerNumber` if malformed."""
    cleaned = value.strip()
    if not BROKER_NUMBER.fullmatch(cleaned):
        raise InvalidBrokerNumber(value)
    return cleaned


def normalise_email(value: str) -> str:
    """The address as stored: syntax-checked (no DNS), domain and local part lower-cased.

    Lower-casing the local part is not RFC-correct in general, but brokers type their
    address in any case and no mail system in this market distinguishes them.
    """
    try:
        result = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(value, str(exc)) from None
    return result.normalized.lower()


def create_user(
    session: Session,
    *,
    broker_number: str,
    email: str,
    name: str,
    now: datetime,
    actor: str,
    locale: str = "de",
    role: UserRole = UserRole.BROKER,
    status: UserStatus = UserStatus.ACTIVE,
) -> User:
    """Validate and add a user (and their organisation if new), with an audit event.

    Raises:
        InvalidBrokerNumber, InvalidEmail, InvalidLocale, InvalidUserData: malformed input.
        DuplicateUser: the email belongs to another user.
    """
    number = validate_broker_number(broker_number)
    address = normalise_email(email)
    display = " ".join(name.split())
    if not display:
        raise InvalidUserData("the name must not be empty")
    if len(display) > 256:
        raise InvalidUserData("the name is longer than 256 characters")
    if locale not in LOCALES:
        raise InvalidLocale(locale, LOCALES)
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise DuplicateUser(address)
    org = session.scalar(select(Organisation).where(Organisation.broker_number == number))
    if org is None:
        org = Organisation(broker_number=number, created_at=now)
        session.add(org)
        session.flush()
    user = User(
        organisation_id=org.id,
        email=address,
        name=display,
        locale=locale,
        role=role,
        status=status,
        created_at=now,
    )
    session.add(user)
    session.flush()
    record_audit(
        session,
        actor=actor,
        action="user.add",
        now=now,
        user_id=user.id,
        details={"email": address, "broker_number": number, "role": role.value},
    )
    return user


def find_user(session: Session, ref: str) -> User:
    """A user by numeric id or email; raises :class:`UnknownUser`."""
    ref = ref.strip()
    user: User | None
    if ref.isdigit():
        user = session.get(User, int(ref))
    else:
        user = session.scalar(select(User).where(func.lower(User.email) == ref.lower()))
    if user is None:
        raise UnknownUser(ref)
    return user
