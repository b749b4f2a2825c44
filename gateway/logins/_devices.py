"""Browsers remembered after a confirmed TAN (seed 001: the TAN mail goes out at most every
30 days per device).

The cookie holds a random 256-bit token; the store keeps only its SHA-256, bound to one
user, with an expiry and a revocation time. A token is only good together with that
user's broker number and email, and it never raises the level above ``basic``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway.logins._tokens import new_token, token_hash
from store import RememberedDevice, record_audit

COOKIE_NAME = "__Host-bg-device"  # __Host-: Secure, path=/, no Domain (RFC 6265bis §4.1.3.2)


def remember_device(
    session: Session, *, user_id: int, label: str | None, validity: timedelta, now: datetime
) -> str:
    """Remember this browser for ``user_id``; returns the cookie value (shown once)."""
    token = new_token()
    session.add(
        RememberedDevice(
            user_id=user_id,
            token_hash=token_hash(token),
            label=(label or "")[:256] or None,
            created_at=now,
            last_used_at=now,
            expires_at=now + validity,
        )
    )
    return token


def recognise_device(
    session: Session, *, token: str | None, user_id: int, now: datetime
) -> RememberedDevice | None:
    """The live remembered device of ``user_id`` that ``token`` names, or ``None``."""
    if not token:
        return None
    row = session.scalar(
        select(RememberedDevice).where(RememberedDevice.token_hash == token_hash(token))
    )
    if row is None or row.user_id != user_id or row.revoked_at is not None or row.expires_at <= now:
        return None
    row.last_used_at = now
    return row


def list_devices(session: Session, user_id: int, now: datetime) -> list[RememberedDevice]:
    return list(
        session.scalars(
            select(RememberedDevice)
            .where(
                RememberedDevice.user_id == user_id,
                RememberedDevice.revoked_at.is_(None),
                RememberedDevice.expires_at > now,
            )
            .order_by(RememberedDevice.created_at)
        )
    )


def revoke_devices(
    session: Session, *, user_id: int, actor: str, now: datetime, device_id: int | None = None
) -> int:
    """Forget one (``device_id``) or all remembered browsers of ``user_id``; audited."""
    stmt = update(RememberedDevice).where(
        RememberedDevice.user_id == user_id, RememberedDevice.revoked_at.is_(None)
    )
    if device_id is not None:
        stmt = stmt.where(RememberedDevice.id == device_id)
    result = session.execute(stmt.values(revoked_at=now))
    count = int(getattr(result, "rowcount", 0) or 0)
    record_audit(
        session,
        actor=actor,
        action="device.revoke",
        now=now,
        user_id=user_id,
        details={"count": count, **({"device_id": device_id} if device_id else {})},
    )
    return count
