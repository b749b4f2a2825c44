"""The 2FA prompt after a password login (seed 000) and account activation (seed 003)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from aiohttp import web

from gateway._state import SETTINGS
from gateway.auth._middleware import request_state, require_csrf
from gateway.auth._request_state import SESSIONS
from gateway.logins._activation import activate, check_activation
from gateway.logins._errors import (
    ActivationInvalid,
    PasswordRejected,
)
from gateway.web._common import (
    P,
    client_addr,
    ctx,
    ensure_session,
    error_text,
    factory,
    form_text,
    next_of,
    now_of,
    page_url,
    read_form,
    require_user,
    see_other,
    show,
)
from gateway.web._formatting import time_for
from store import Level, User, record_audit, transaction

# --- 2FA prompt after a basic login (seed 000: "Nicht jetzt" / "Vorerst nicht mehr anzeigen")


def _deadline_open(request: web.Request) -> tuple[bool, datetime | None]:
    deadline = request.app[SETTINGS].twofa_deadline_at
    return deadline is not None and now_of(request) < deadline, deadline


async def twofa_prompt_page(request: web.Request) -> web.StreamResponse:
    require_user(request, level=Level.BASIC)
    open_, deadline = _deadline_open(request)
    return show(
        request,
        "twofa_prompt.html",
        {
            "next": next_of(request.query),
            "can_skip": open_,
            "deadline_text": time_for(request, deadline),
        },
    )


async def twofa_prompt_submit(request: web.Request) -> web.StreamResponse:
    user_id = require_user(request, level=Level.BASIC)
    form = await read_form(request)
    require_csrf(request, form)
    next_path = next_of(form)
    open_, deadline = _deadline_open(request)
    if form.get("action") != "not_now" or not open_:
        return see_other(page_url(f"{P}/2fa/setup", next=next_path))
    state = request_state(request)
    assert state.session is not None and deadline is not None
    now = now_of(request)
    state.session = await asyncio.to_thread(
        request.app[SESSIONS].update, state.session, now=now, twofa_prompt_dismissed=True
    )
    snooze = form.get("snooze") == "yes"

    def save() -> None:
        with transaction(factory(request)) as session:
            user = session.get(User, user_id)
            assert user is not None
            if snooze:
                user.twofa_prompt_snoozed_until = deadline
            record_audit(
                session,
                actor=f"user:{user_id}",
                action="twofa.not_now",
                now=now,
                user_id=user_id,
                details={"snoozed_until": deadline.isoformat() if snooze else None},
            )

    await asyncio.to_thread(save)
    return see_other(next_path)


# --- account activation (seed 003)


async def activation_page(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    token = request.match_info["token"]
    try:
        email = await asyncio.to_thread(
            check_activation, factory(request), token=token, now=now_of(request)
        )
    except ActivationInvalid as exc:
        return show(
            request, "activate.html", {"invalid": error_text(request, exc), "token": ""}, status=404
        )
    return show(
        request,
        "activate.html",
        {"email": email, "token": token, "min_length": ctx(request).settings.password_min_length},
    )


async def activation_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    token = request.match_info["token"]
    c = ctx(request)
    try:
        await asyncio.to_thread(
            activate,
            factory(request),
            token=token,
            password=form_text(form, "password"),
            repeat=form_text(form, "repeat"),
            settings=c.settings,
            client_addr=client_addr(request),
            now=now_of(request),
        )
    except ActivationInvalid as exc:
        return show(
            request, "activate.html", {"invalid": error_text(request, exc), "token": ""}, status=404
        )
    except PasswordRejected as exc:
        email = await asyncio.to_thread(
            check_activation, factory(request), token=token, now=now_of(request)
        )
        return show(
            request,
            "activate.html",
            {
                "email": email,
                "token": token,
                "error": error_text(request, exc),
                "min_length": c.settings.password_min_length,
            },
            status=400,
        )
    return show(request, "activated.html")
