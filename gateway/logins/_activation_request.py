""" "Konto aktivieren" on request (issue 14; seed 003 "Activeer hier uw account"): email +
broker number → a fresh activation mail for a user who has not activated yet.

Like :mod:`gateway.logins._password_reset`, the caller shows one answer whatever happened;
requests count against the same per-address recovery throttle, and activation mails per
account against ``recovery_mails_per_account``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ca import InvalidEmail, normalise_email
from gateway.logins._accounts import normalise_broker_number
from gateway.logins._activation import send_activation
from gateway.logins._settings import LoginSettings
from gateway.regulation import _counters as counters
from gateway.regulation._throttles import recovery_address_key, recovery_mail_allowed
from store import ActivationToken, Organisation, Sealer, User, UserStatus, transaction


def request_activation(
    sessions: sessionmaker[Session],
    *,
    email: str,
    broker_number: str,
    link_base: str,
    mail_sealer: Sealer,
    settings: LoginSettings,
    client_addr: str | None,
    now: datetime,
    language: str | None = None,
) -> bool:
    """Queue a new activation link if ``email`` and ``broker_number`` name one user who is
    not activated yet (pending, or active without a password) and no limit is hit (in
    ``language``, the one the broker chose on the page, else the user's locale).

    Returns:
        Whether a mail was queued — for tests only: the page must not depend on it.
    """
    limits = settings.limits
    number = normalise_broker_number(broker_number)
    try:
        address = normalise_email(email)
    except InvalidEmail:
        address = None
    with transaction(sessions) as session:
        if client_addr and counters.register_failure(
            session, recovery_address_key(client_addr), limits.recovery_per_address, now
        ):
            return False  # SECURITY: the address probed too many accounts; same answer
        if address is None or number is None:
            return False
        user = session.scalar(
            select(User)
            .join(Organisation, Organisation.id == User.organisation_id)
            .where(
                func.lower(User.email) == address.lower(),
                Organisation.broker_number == number,
            )
        )
        if user is None or user.status == UserStatus.DISABLED:
            return False
        if user.status == UserStatus.ACTIVE and user.password_hash is not None:
            return False  # activated: "Passwort vergessen?" is the way back
        sent = session.scalars(
            select(ActivationToken.created_at).where(
                ActivationToken.user_id == user.id,
                ActivationToken.created_at > now - limits.recovery_mail_window,
            )
        ).all()
        if not recovery_mail_allowed(sent, limits):
            return False
        send_activation(
            session,
            user_id=user.id,
            link_base=link_base,
            settings=settings,
            mail_sealer=mail_sealer,
            actor=f"self:{client_addr or '-'}",
            now=now,
            language=language,
        )
        return True
