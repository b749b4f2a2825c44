"""Brokers as the CA knows them: validation, creation and lookup of users.

Broker numbers have the portal's format NN/NNN/NNNN (seed 001, e.g. 60/123/4567).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca._errors import (
    DuplicateUser,
    InvalidLocale,
    InvalidOfficeData,
    InvalidUserData,
    UnknownUser,
)
from ca._firm_settings import FirmSettings
from ca._identifiers import LOCALES, normalise_email, validate_broker_number
from ca._offices import (
    bounded_rights,
    create_head_office,
    head_office_of,
    office_rights,
    validate_rights,
)
from store import Office, Organisation, User, UserRole, UserStatus, record_audit


def create_user(
    session: Session,
    *,
    broker_number: str,
    email: str,
    name: str,
    now: datetime,
    actor: str,
    locale: str = "de",
    role: UserRole | None = None,
    status: UserStatus = UserStatus.ACTIVE,
    office: Office | None = None,
    rights: Iterable[str] | None = None,
    firms: FirmSettings | None = None,
) -> User:
    """Validate and add a user (and their firm with its head office if new), audited.

    ``office``: one of the firm's offices (default: its head office). ``role``: default
    head user if the office has none yet, else employee. ``rights``: default everything the
    office may grant; otherwise validated against the catalogue and bounded by the office.

    Raises:
        InvalidBrokerNumber, InvalidEmail, InvalidLocale, InvalidUserData, UnknownRight,
        RightNotInOffice, InvalidOfficeData: malformed input.
        DuplicateUser: the email belongs to another user.
    """
    catalogue = firms or FirmSettings()
    number = validate_broker_number(broker_number)
    address = normalise_email(email)
    display = " ".join(name.split())
    if not display:
        raise InvalidUserData("the name must not be empty")
    if len(display) > 256:
        raise InvalidUserData("the name is longer than 256 characters")
    if locale not in LOCALES:
        raise InvalidLocale(locale, LOCALES)
    granted = None if rights is None else validate_rights(rights, catalogue)
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise DuplicateUser(address)
    org = session.scalar(select(Organisation).where(Organisation.broker_number == number))
    if org is None:
        if office is not None:
            raise InvalidOfficeData(f"office {office.number} is not an office of firm {number}")
        org = Organisation(broker_number=number, created_at=now)
        session.add(org)
        session.flush()
        office = create_head_office(
            session,
            organisation_id=org.id,
            broker_number=number,
            name=None,
            firms=catalogue,
            now=now,
            actor=actor,
        )
    elif office is None:
        office = head_office_of(session, org.id)
    elif office.organisation_id != org.id:
        raise InvalidOfficeData(f"office {office.number} is not an office of firm {number}")
    if role is None:
        has_head = session.scalar(
            select(User.id).where(User.office_id == office.id, User.role == UserRole.HEAD)
        )
        role = UserRole.EMPLOYEE if has_head is not None else UserRole.HEAD
    user = User(
        organisation_id=org.id,
        office_id=office.id,
        email=address,
        name=display,
        locale=locale,
        role=role,
        rights=sorted(office_rights(office))
        if granted is None
        else bounded_rights(granted, office),
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
        details={
            "email": address,
            "broker_number": number,
            "office": office.number,
            "role": role.value,
            "rights": user.rights,
        },
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
