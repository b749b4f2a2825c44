"""Firms as trees of offices: head office, sub-offices, head users, employees and rights.

Seed 003 ("Gebruikers", "Subkantoren"): a head user administers their office; the head
user of a head office also sees and manages its sub-offices and their users. Rights are
product keys of the configured catalogue (:class:`ca.FirmSettings`); an office's rights bound
its users' rights, and a sub-office's rights are bounded by its head office's.

Everything a head user may touch goes through :func:`authorise_office` and
:func:`authorise_user`; both answer "not found or not yours" alike, so ids of other firms
cannot be probed. Every write records an audit event in the caller's transaction. Ending
sessions is the caller's part (the sessions are the gateway's): the functions that take a
login away return or imply whose sessions to end.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, object_session

from ca._errors import (
    DuplicateOffice,
    InvalidOfficeData,
    InvalidUserData,
    NotPermitted,
    OfficeInUse,
    RightNotInOffice,
    UnknownRight,
)
from ca._firm_settings import FirmSettings
from ca._identifiers import normalise_email
from store import (
    ActivationToken,
    AuditEvent,
    Certificate,
    EmailChangeToken,
    EmailTan,
    MailOutbox,
    Office,
    PasskeyCredential,
    PasswordResetToken,
    RecoveryCode,
    RememberedDevice,
    User,
    UserRole,
    UserStatus,
    WebSession,
    record_audit,
)

OFFICE_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ./_-]{0,31}$")
PHONE = re.compile(r"^\+?[0-9 ()/.-]{3,40}$")


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP
"""For :func:`update_office`: leave this field as it is."""


def validate_rights(rights: Iterable[str], firms: FirmSettings) -> list[str]:
    """The keys, upper-cased, de-duplicated and sorted; :class:`UnknownRight` for a key
    that is not in the catalogue."""
    known = firms.keys()
    cleaned = {r.strip().upper() for r in rights if r.strip()}
    for key in sorted(cleaned):
        if key not in known:
            raise UnknownRight(key, known)
    return sorted(cleaned)


def rights_within(
    rights: Iterable[str] | None,
    office: Iterable[str] | None,
    head_office: Iterable[str] | None,
) -> frozenset[str]:
    """The rule on plain values (for readers of columns, e.g. the gateway's trust cache):
    ``rights`` bounded by the office's and, for a sub-office, the head office's
    (``head_office`` None: the office is the head office)."""
    bound = frozenset(office or ())
    if head_office is not None:
        bound &= frozenset(head_office)
    return frozenset(rights or ()) & bound


def office_rights(office: Office) -> frozenset[str]:
    """What ``office`` may grant: its rights, bounded by its head office's."""
    head = office.head_office
    return rights_within(office.rights, office.rights, None if head is None else head.rights or ())


def effective_rights(user: User) -> frozenset[str]:
    """The rights the portal is told: the user's, bounded by their office (and head office)."""
    return rights_within(user.rights, office_rights(user.office), None)


def may_log_in(status: UserStatus, office_active: bool, head_office_active: bool | None) -> bool:
    """The common case of :func:`login_refusal` on plain values: an active user in an
    active office (and head office; None: the office is the head office). False means
    :func:`login_refusal` has a reason to give."""
    return status is UserStatus.ACTIVE and office_active and head_office_active is not False


def bounded_rights(rights: list[str], office: Office) -> list[str]:
    missing = sorted(set(rights) - office_rights(office))
    if missing:
        raise RightNotInOffice(missing, office.number)
    return rights


def head_office_of(session: Session, organisation_id: int) -> Office:
    """The firm's head office (every firm has one: created with the firm)."""
    return session.scalars(
        select(Office).where(
            Office.organisation_id == organisation_id, Office.head_office_id.is_(None)
        )
    ).one()


def create_head_office(
    session: Session,
    *,
    organisation_id: int,
    broker_number: str,
    name: str | None,
    firms: FirmSettings,
    now: datetime,
    actor: str,
) -> Office:
    """The head office of a new firm: number = broker number, every catalogue right."""
    office = Office(
        organisation_id=organisation_id,
        head_office_id=None,
        number=broker_number,
        name=_text(name, "name", 256) if name else broker_number,
        rights=list(sorted(firms.keys())),
        active=True,
        created_at=now,
    )
    session.add(office)
    session.flush()
    record_audit(
        session,
        actor=actor,
        action="office.add",
        now=now,
        details={"office_id": office.id, "number": office.number, "head_office": True},
    )
    return office


def _text(value: str | None, field: str, limit: int, *, required: bool = True) -> str:
    cleaned = " ".join((value or "").split())
    if not cleaned:
        if required:
            raise InvalidOfficeData(f"the office's {field} must not be empty", field=field)
        return ""
    if len(cleaned) > limit:
        raise InvalidOfficeData(
            f"the office's {field} is longer than {limit} characters", field=field
        )
    return cleaned


def _optional(value: str | None, field: str, limit: int) -> str | None:
    return _text(value, field, limit, required=False) or None


def _number(value: str) -> str:
    cleaned = value.strip()
    if not OFFICE_NUMBER.fullmatch(cleaned):
        raise InvalidOfficeData(
            f"invalid office number {value!r}: 1 to 32 letters, digits, spaces or . / _ -, "
            "starting with a letter or digit",
            field="number",
        )
    return cleaned


def _phone(value: str | None) -> str | None:
    cleaned = (value or "").strip()
    if not cleaned:
        return None
    if not PHONE.fullmatch(cleaned):
        raise InvalidOfficeData(
            f"invalid phone number {value!r}: digits, spaces, + ( ) / . -", field="phone"
        )
    return cleaned


def _office_email(value: str) -> str:
    if not value or not value.strip():
        raise InvalidOfficeData("the office's email address must not be empty", field="email")
    try:
        return normalise_email(value)
    except InvalidUserData as exc:
        raise InvalidOfficeData(str(exc), field="email") from None


def _check_unique(
    session: Session, *, organisation_id: int, number: str, email: str, office_id: int | None
) -> None:
    clash = session.scalar(
        select(Office.id).where(
            Office.organisation_id == organisation_id,
            func.lower(Office.number) == number.lower(),
            Office.id != (office_id or -1),
        )
    )
    if clash is not None:
        raise DuplicateOffice(
            f"the firm has an office with number {number!r} already", field="number"
        )
    clash = session.scalar(
        select(Office.id).where(Office.email == email, Office.id != (office_id or -1))
    )
    if clash is not None:
        raise DuplicateOffice(
            f"the email address {email!r} belongs to another office; every office needs its own",
            field="email",
        )


def create_sub_office(
    session: Session,
    *,
    head_office: Office,
    number: str,
    name: str,
    email: str,
    address: str | None = None,
    postcode: str | None = None,
    city: str | None = None,
    phone: str | None = None,
    rights: Iterable[str] = (),
    firms: FirmSettings,
    now: datetime,
    actor: str,
) -> Office:
    """Validate and add a sub-office under ``head_office`` (seed 003, "nieuw subkantoor").

    Raises:
        InvalidOfficeData, UnknownRight, RightNotInOffice: malformed input.
        DuplicateOffice: the number is taken in the firm, or the email by another office.
    """
    if not head_office.is_head_office:
        raise InvalidOfficeData("sub-offices are added under the head office, not under another")
    office = Office(
        organisation_id=head_office.organisation_id,
        head_office_id=head_office.id,
        number=_number(number),
        name=_text(name, "name", 256),
        address=_optional(address, "address", 256),
        postcode=_optional(postcode, "postcode", 16),
        city=_optional(city, "city", 128),
        phone=_phone(phone),
        email=_office_email(email),
        active=True,
        created_at=now,
    )
    office.head_office = head_office
    office.rights = bounded_rights(validate_rights(rights, firms), head_office)
    assert office.email is not None
    _check_unique(
        session,
        organisation_id=office.organisation_id,
        number=office.number,
        email=office.email,
        office_id=None,
    )
    session.add(office)
    session.flush()
    record_audit(
        session,
        actor=actor,
        action="office.add",
        now=now,
        details={
            "office_id": office.id,
            "number": office.number,
            "head_office_id": head_office.id,
            "rights": office.rights,
        },
    )
    return office


def update_office(
    session: Session,
    office: Office,
    *,
    firms: FirmSettings,
    now: datetime,
    actor: str,
    name: str | _Keep = KEEP,
    email: str | _Keep = KEEP,
    number: str | _Keep = KEEP,
    address: str | _Keep | None = KEEP,
    postcode: str | _Keep | None = KEEP,
    city: str | _Keep | None = KEEP,
    phone: str | _Keep | None = KEEP,
    rights: Iterable[str] | _Keep = KEEP,
) -> Office:
    """Change the given fields of ``office``; all are validated before any is written.

    Taking a right away from an office takes it from its users too (and, for a head office,
    from its sub-offices and their users), each change audited.
    """
    values: dict[str, object] = {}
    if name is not KEEP:
        values["name"] = _text(name, "name", 256)
    if number is not KEEP:
        if office.is_head_office:
            raise InvalidOfficeData(
                "the head office's number is the broker number; it is fixed", field="number"
            )
        values["number"] = _number(number)
    if email is not KEEP:
        values["email"] = _office_email(email)
    if address is not KEEP:
        values["address"] = _optional(address, "address", 256)
    if postcode is not KEEP:
        values["postcode"] = _optional(postcode, "postcode", 16)
    if city is not KEEP:
        values["city"] = _optional(city, "city", 128)
    if phone is not KEEP:
        values["phone"] = _phone(phone)
    new_rights: list[str] | None = None
    if rights is not KEEP:
        new_rights = validate_rights(rights, firms)
        if office.head_office is not None:
            bounded_rights(new_rights, office.head_office)
    if "email" in values or "number" in values:
        new_email = values.get("email", office.email)
        _check_unique(
            session,
            organisation_id=office.organisation_id,
            number=str(values.get("number", office.number)),
            email=str(new_email) if new_email is not None else "",
            office_id=office.id,
        )
    before = {k: getattr(office, k) for k in values}
    for key, value in values.items():
        setattr(office, key, value)
    details: dict[str, object] = {
        "office_id": office.id,
        "changed": {k: {"from": before[k], "to": v} for k, v in values.items() if before[k] != v},
    }
    if new_rights is not None and new_rights != sorted(office.rights or ()):
        removed = sorted(set(office.rights or ()) - set(new_rights))
        details["rights"] = {"from": sorted(office.rights or ()), "to": new_rights}
        office.rights = new_rights
        if removed:
            _withdraw(session, office, set(removed), now=now, actor=actor)
    session.flush()
    record_audit(session, actor=actor, action="office.update", now=now, details=details)
    return office


def _withdraw(
    session: Session, office: Office, removed: set[str], *, now: datetime, actor: str
) -> None:
    offices = [office]
    if office.is_head_office:
        offices += list(session.scalars(select(Office).where(Office.head_office_id == office.id)))
    for o in offices:
        if o is not office and set(o.rights or ()) & removed:
            o.rights = sorted(set(o.rights or ()) - removed)
            record_audit(
                session,
                actor=actor,
                action="office.update",
                now=now,
                details={"office_id": o.id, "rights_withdrawn": sorted(removed)},
            )
        for user in session.scalars(select(User).where(User.office_id == o.id)):
            if set(user.rights or ()) & removed:
                before = sorted(user.rights or ())
                user.rights = sorted(set(before) - removed)
                record_audit(
                    session,
                    actor=actor,
                    action="user.rights",
                    now=now,
                    user_id=user.id,
                    details={"from": before, "to": user.rights, "why": "office right withdrawn"},
                )


def offices_below(session: Session, office: Office) -> list[Office]:
    """``office`` and, for a head office, its sub-offices (head first, then by number)."""
    if not office.is_head_office:
        return [office]
    subs = session.scalars(
        select(Office).where(Office.head_office_id == office.id).order_by(Office.number)
    )
    return [office, *subs]


def set_office_active(
    session: Session, office: Office, active: bool, *, now: datetime, actor: str
) -> list[int]:
    """(De)activate ``office``; returns the ids of the users whose sessions the caller ends.

    A deactivated head office stops its sub-offices' logins too (:func:`login_refusal`
    looks at both), so those users are in the list as well.
    """
    if office.active == active:
        return []
    office.active = active
    office.deactivated_at = None if active else now
    session.flush()
    record_audit(
        session,
        actor=actor,
        action="office.reactivate" if active else "office.deactivate",
        now=now,
        details={"office_id": office.id, "number": office.number},
    )
    if active:
        return []
    ids = [o.id for o in offices_below(session, office)]
    return list(session.scalars(select(User.id).where(User.office_id.in_(ids))))


# The rows that belong to a user and go with them when a never-used office is deleted.
_USER_ROWS = (
    WebSession,
    EmailTan,
    RememberedDevice,
    RecoveryCode,
    PasskeyCredential,
    ActivationToken,
    EmailChangeToken,
    PasswordResetToken,
)


def delete_office(session: Session, office: Office, *, now: datetime, actor: str) -> None:
    """Delete a sub-office and its users while none of them has ever logged in.

    Raises :class:`OfficeInUse` otherwise (deactivate it instead). The audit trail keeps
    every row: the removed users' earlier events and mails stay, with their link to the
    deleted user row cleared (their details keep the email), and ``office.delete`` lists
    whom it removed.
    """
    if office.is_head_office:
        raise InvalidOfficeData("the head office cannot be deleted; deactivate it instead")
    users = list(session.scalars(select(User).where(User.office_id == office.id)))
    ids = [u.id for u in users]
    used = any(u.last_login_at is not None for u in users) or (
        bool(ids)
        and session.scalar(select(Certificate.id).where(Certificate.user_id.in_(ids)).limit(1))
        is not None
    )
    if used:
        raise OfficeInUse(office.number)
    if ids:
        for model in _USER_ROWS:
            session.execute(delete(model).where(model.user_id.in_(ids)))
        session.execute(update(MailOutbox).where(MailOutbox.user_id.in_(ids)).values(user_id=None))
        session.execute(update(AuditEvent).where(AuditEvent.user_id.in_(ids)).values(user_id=None))
        for user in users:
            session.delete(user)
    details = {
        "office_id": office.id,
        "number": office.number,
        "removed_users": [{"id": u.id, "email": u.email} for u in users],
    }
    session.delete(office)
    session.flush()
    record_audit(session, actor=actor, action="office.delete", now=now, details=details)


def set_user_rights(
    session: Session,
    user: User,
    rights: Iterable[str],
    *,
    firms: FirmSettings,
    now: datetime,
    actor: str,
) -> User:
    """Give ``user`` exactly ``rights`` (bounded by the office's); audited."""
    new = bounded_rights(validate_rights(rights, firms), user.office)
    before = sorted(user.rights or ())
    if new != before:
        user.rights = new
        session.flush()
        record_audit(
            session,
            actor=actor,
            action="user.rights",
            now=now,
            user_id=user.id,
            details={"from": before, "to": new},
        )
    return user


def set_user_active(
    session: Session,
    user: User,
    active: bool,
    *,
    now: datetime,
    actor: str,
    by: User | None = None,
) -> bool:
    """(De)activate ``user``; ``True`` if something changed. The caller ends the sessions.

    Reactivation restores ``active`` for a user who has logged in or set a password, else
    ``pending`` (they still need the activation mail). ``by``: the head user doing it, who
    cannot deactivate their own account.
    """
    if by is not None and by.id == user.id and not active:
        raise InvalidUserData(
            "you cannot deactivate your own account; another head user or support can"
        )
    currently = user.status is not UserStatus.DISABLED
    if currently == active:
        return False
    if active:
        ever_used = user.last_login_at is not None or user.password_hash is not None
        user.status = UserStatus.ACTIVE if ever_used else UserStatus.PENDING
    else:
        user.status = UserStatus.DISABLED
    session.flush()
    record_audit(
        session,
        actor=actor,
        action="user.reactivate" if active else "user.deactivate",
        now=now,
        user_id=user.id,
        details={"status": user.status.value},
    )
    return True


@dataclass(frozen=True)
class LoginRefusal:
    """Why ``user`` may not log in, and whom to ask (``None``: broker support)."""

    reason: Literal["user_disabled", "user_pending", "office_inactive", "head_office_inactive"]
    contact_name: str | None
    contact_email: str | None


def _head_user(session: Session, office: Office, *, besides: int | None = None) -> User | None:
    return session.scalars(
        select(User)
        .where(
            User.office_id == office.id,
            User.role == UserRole.HEAD,
            User.status == UserStatus.ACTIVE,
            User.id != (besides or -1),
        )
        .order_by(User.id)
        .limit(1)
    ).first()


def login_refusal(user: User, db: Session | None = None) -> LoginRefusal | None:
    """``None`` if ``user`` may log in; otherwise why not and whom to ask.

    One check for every login method and every request of an open session. The common case
    (active user, active office) costs no query beyond loading the office rows.
    """
    office = user.office
    head = office.head_office
    if may_log_in(user.status, office.active, None if head is None else head.active):
        return None
    session = db or object_session(user)
    if session is None:
        raise ValueError("login_refusal needs the user attached to a session, or db=")

    def contact(
        reason: Literal["user_disabled", "user_pending", "office_inactive", "head_office_inactive"],
        at: Office | None,
        besides: int | None = None,
    ) -> LoginRefusal:
        person = _head_user(session, at, besides=besides) if at is not None else None
        if person is None and at is not None and at.head_office is not None:
            person = _head_user(session, at.head_office)
        if person is None:
            return LoginRefusal(reason, None, None)
        return LoginRefusal(reason, person.name, person.email)

    if head is not None and not head.active:
        return LoginRefusal("head_office_inactive", None, None)
    if not office.active:
        return contact("office_inactive", head)
    if user.status is UserStatus.DISABLED:
        return contact("user_disabled", office, besides=user.id)
    return contact("user_pending", office, besides=user.id)


def administered_offices(session: Session, actor: User) -> list[Office]:
    """The offices ``actor`` manages: none for an employee or a user who may not log in."""
    if actor.role is not UserRole.HEAD or login_refusal(actor, session) is not None:
        return []
    return offices_below(session, actor.office)


def authorise_office(session: Session, actor: User, office_id: int) -> Office:
    """The office ``office_id`` if ``actor`` administers it, else :class:`NotPermitted`."""
    for office in administered_offices(session, actor):
        if office.id == office_id:
            return office
    raise NotPermitted()


def authorise_user(session: Session, actor: User, user_id: int) -> User:
    """The user ``user_id`` if they belong to an office ``actor`` administers."""
    ids = {o.id for o in administered_offices(session, actor)}
    user = session.get(User, user_id)
    if user is None or user.office_id not in ids:
        raise NotPermitted()
    return user


def visible_users(session: Session, actor: User) -> list[User]:
    """The users of the offices ``actor`` administers: by office (head office first), name."""
    offices = administered_offices(session, actor)
    order = {o.id: i for i, o in enumerate(offices)}
    users = session.scalars(select(User).where(User.office_id.in_(list(order))))
    return sorted(users, key=lambda u: (order[u.office_id], u.name.casefold(), u.id))
