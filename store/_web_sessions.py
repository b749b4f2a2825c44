"""Ending every web session of a user: one query shared by the gateway's "logout everywhere"
and by processes without a gateway (``brokergate user reset-2fa``, issue 14)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from store._models import WebSession


def end_user_sessions(session: Session, *, user_id: int, now: datetime) -> list[str]:
    """End every open session of ``user_id`` in the caller's transaction; returns their ids.

    Gateways drop their cached copies at their next refresh (≤ 2 s), so a process with no
    gateway cache of its own (the CLI) ends sessions with this alone.
    """
    ids = list(
        session.scalars(
            select(WebSession.id).where(
                WebSession.user_id == user_id, WebSession.ended_at.is_(None)
            )
        )
    )
    if ids:
        session.execute(update(WebSession).where(WebSession.id.in_(ids)).values(ended_at=now))
    return ids
