"""What every login page does once a factor is accepted: open the session, then the 2FA
prompt (seed 000) after a password-only login."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from gateway._state import SETTINGS
from gateway.auth._middleware import complete_login, request_state
from gateway.auth._request_state import SESSIONS
from gateway.logins._history import METHOD_PASSWORD, METHOD_RESTRICTED, session_method
from gateway.logins._password_login import second_factors_of
from gateway.web._common import (
    PENDING_KEY,
    PENDING_TTL_SECONDS,
    P,
    factory,
    now_of,
    page_url,
    see_other,
)
from gateway.web._language import remember_chosen_language
from store import Level, User, transaction

TAN_KEY = "logins.tan"  # session data: the TAN on its way (id, email, broker number)
CHALLENGE_KEY = "logins.challenge"  # session data: the WebAuthn challenge (base64), single use

# --- after a successful factor


def user_facts(request: web.Request, user_id: int) -> dict[str, Any]:
    with transaction(factory(request)) as session:
        user = session.get(User, user_id)
        assert user is not None
        return {
            "factors": second_factors_of(session, user),
            "snoozed_until": user.twofa_prompt_snoozed_until,
        }


async def finish_login(
    request: web.Request, *, user_id: int, level: Level, method: str, next_path: str
) -> web.Response:
    """Open the session; a password-only login goes to the 2FA prompt (seed 000) first."""
    state = request_state(request)
    data = {k: v for k, v in (state.session.data if state.session else {}).items()}
    for key in (PENDING_KEY, TAN_KEY, CHALLENGE_KEY):
        data.pop(key, None)
    method = session_method(method)
    await complete_login(request, user_id=user_id, level=level, method=method)
    if level.satisfies(Level.BASIC):  # a restricted session is not proven to be the user
        await remember_chosen_language(request, user_id)
    new_state = request_state(request).session
    assert new_state is not None
    new_state = await asyncio.to_thread(
        request.app[SESSIONS].update, new_state, now=now_of(request), data=data
    )
    request_state(request).session = new_state
    if level is Level.BASIC and method == METHOD_PASSWORD:
        facts = await asyncio.to_thread(user_facts, request, user_id)
        now = now_of(request)
        deadline = request.app[SETTINGS].twofa_deadline_at
        snoozed = facts["snoozed_until"] is not None and facts["snoozed_until"] > now
        if snoozed and deadline is not None and now < deadline:
            request_state(request).session = await asyncio.to_thread(
                request.app[SESSIONS].update, new_state, now=now, twofa_prompt_dismissed=True
            )
        else:
            return see_other(page_url(f"{P}/2fa/prompt", next=next_path))
    return see_other(next_path)


def pending_user(request: web.Request) -> dict[str, Any] | None:
    state = request_state(request)
    pending = state.session.data.get(PENDING_KEY) if state.session else None
    if not isinstance(pending, dict):
        return None
    at = datetime.fromisoformat(pending["at"])
    if now_of(request) - at > timedelta(seconds=PENDING_TTL_SECONDS):
        return None
    return pending


__all__ = [
    "CHALLENGE_KEY",
    "METHOD_RESTRICTED",
    "TAN_KEY",
    "finish_login",
    "pending_user",
    "user_facts",
]
