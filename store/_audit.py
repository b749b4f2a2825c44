"""The audit trail: one append-only row per security-relevant action."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from store._models import AuditEvent


def record_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    now: datetime,
    outcome: str = "ok",
    user_id: int | None = None,
    serial: str | None = None,
    client_addr: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit event in the caller's transaction.

    ``details`` must never contain a secret (passwords, TANs, keys): it is
    shown to ops as it is.
    """
    event = AuditEvent(
        at=now,
        actor=actor,
        action=action,
        outcome=outcome,
        user_id=user_id,
        serial=serial,
        client_addr=client_addr,
        details=details or {},
    )
    session.add(event)
    return event
