"""Finding the account a broker means: by email, or by broker number (seeds 001, 003)."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store import Organisation, User, UserRole, UserStatus

# The portal's format NN/NNN/NNNN (seed 001: "Beispiel: 60/123/4567"), as ca stores it.
BROKER_NUMBER = re.compile(r"^\d{2}/\d{3}/\d{4}$")


def normalise_broker_number(value: str) -> str | None:
    """``value`` in the stored format, or ``None`` if it cannot be a broker number.

    Brokers type the number with spaces or without the slashes; nine digits are
    accepted and formatted, anything else must already be NN/NNN/NNNN.
    """
    cleaned = "".join(value.split())
    if cleaned.isdigit() and len(cleaned) == 9:
        cleaned = f"{cleaned[:2]}/{cleaned[2:5]}/{cleaned[5:]}"
    return cleaned if BROKER_NUMBER.fullmatch(cleaned) else None


def normalise_email(value: str) -> str:
    """Stored addresses are lower-cased (store.User.email); compare the same way."""
    return value.strip().lower()


def find_organisation(session: Session, broker_number: str) -> Organisation | None:
    number = normalise_broker_number(broker_number)
    if number is None:
        return None
    return session.scalar(select(Organisation).where(Organisation.broker_number == number))


def find_user_for_login(session: Session, identifier: str) -> User | None:
    """The account ``identifier`` (email or broker number) names, or ``None``.

    A broker number names its organisation's head office's head user (seed 003: "Als
    hoofdgebruiker logt u in met uw adviseursnummer of … e-mailadres"), or the only
    user of a one-person firm; employees log in with their email.
    """
    text = identifier.strip()
    if "@" in text:
        return session.scalar(select(User).where(func.lower(User.email) == normalise_email(text)))
    org = find_organisation(session, text)
    if org is None:
        return None
    users = list(session.scalars(select(User).where(User.organisation_id == org.id)))
    admins = [u for u in users if _heads_the_firm(u)]
    if len(admins) == 1:
        return admins[0]
    return users[0] if len(users) == 1 else None


def primary_user(session: Session, org: Organisation) -> User | None:
    """The user a firm-level (restricted) session is attributed to: the head office's head user,
    else the first active user of the firm."""
    users = list(
        session.scalars(
            select(User)
            .where(User.organisation_id == org.id, User.status == UserStatus.ACTIVE)
            .order_by(User.id)
        )
    )
    admins = [u for u in users if _heads_the_firm(u)]
    if admins:
        return admins[0]
    return users[0] if users else None


def _heads_the_firm(user: User) -> bool:
    """A head user of the firm's head office (not of a sub-office)."""
    return user.role is UserRole.HEAD and user.office.is_head_office
