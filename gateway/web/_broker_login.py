"""Broker number + TAN pages (seed 001) and "continue without email" (restricted)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.auth._middleware import request_state, require_csrf
from gateway.logins._devices import COOKIE_NAME as DEVICE_COOKIE
from gateway.logins._errors import (
    InvalidBrokerNumber,
    LoginError,
    TanInvalid,
    UnknownEmail,
)
from gateway.logins._history import METHOD_EMAIL_TAN
from gateway.logins._tan import (
    DeviceRecognised,
    TanSent,
    confirm_tan,
    restricted_login,
    start_broker_login,
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
    refresh_session,
    see_other,
    show,
    update_session_data,
)
from gateway.web._finish_login import METHOD_RESTRICTED, TAN_KEY, finish_login
from gateway.web._pages import chosen_language
from store import Level

# --- broker number + TAN (seed 001)


async def broker_page(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    return show(request, "broker.html", {"next": next_of(request.query), "broker": "", "email": ""})


async def broker_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    next_path = next_of(form)
    broker = form_text(form, "broker", 32)
    email = form_text(form, "email", 320)
    c = ctx(request)
    try:
        result = await asyncio.to_thread(
            start_broker_login,
            factory(request),
            broker_number=broker,
            email=email,
            device_token=request.cookies.get(DEVICE_COOKIE),
            client_addr=client_addr(request),
            settings=c.settings,
            tan_key=c.tan_key,
            mail_sealer=c.outbox_sealer,
            now=now_of(request),
            language=chosen_language(request),
        )
    except UnknownEmail as exc:
        return show(
            request,
            "unknown_email.html",
            {"next": next_path, "broker": exc.broker_number, "email": exc.email},
            status=401,
        )
    except LoginError as exc:
        field = "broker" if isinstance(exc, InvalidBrokerNumber) else "form"
        return show(
            request,
            "broker.html",
            {
                "next": next_path,
                "broker": broker,
                "email": email,
                "error": error_text(request, exc),
                "error_field": field,
            },
            status=401,
        )
    if isinstance(result, DeviceRecognised):
        return await finish_login(
            request,
            user_id=result.user_id,
            level=Level.BASIC,
            method=METHOD_EMAIL_TAN,
            next_path=next_path,
        )
    assert isinstance(result, TanSent)
    await update_session_data(
        request, **{TAN_KEY: {"id": result.tan_id, "email": result.email, "broker": broker}}
    )
    return see_other(page_url(f"{P}/login/broker/tan", next=next_path))


def _pending_tan(request: web.Request) -> dict[str, Any] | None:
    state = request_state(request)
    value = state.session.data.get(TAN_KEY) if state.session else None
    return value if isinstance(value, dict) else None


async def tan_page(request: web.Request) -> web.StreamResponse:
    await refresh_session(request)  # the TAN was sent by the previous step, maybe elsewhere
    pending = _pending_tan(request)
    next_path = next_of(request.query)
    if pending is None:
        return see_other(page_url(f"{P}/login/broker", next=next_path))
    return show(
        request,
        "broker_tan.html",
        {
            "next": next_path,
            "email": pending["email"],
            "broker": pending["broker"],
            "minutes": int(ctx(request).settings.tan_validity.total_seconds() // 60),
        },
    )


async def tan_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    next_path = next_of(form)
    await refresh_session(request)
    pending = _pending_tan(request)
    if pending is None:
        return see_other(page_url(f"{P}/login/broker", next=next_path))
    c = ctx(request)
    try:
        result = await asyncio.to_thread(
            confirm_tan,
            factory(request),
            tan_id=int(pending["id"]),
            tan=form_text(form, "tan", 32),
            remember=form.get("remember") == "yes",
            device_label=request.headers.get("User-Agent", "")[:200],
            client_addr=client_addr(request),
            settings=c.settings,
            tan_key=c.tan_key,
            now=now_of(request),
        )
    except LoginError as exc:
        return show(
            request,
            "broker_tan.html",
            {
                "next": next_path,
                "email": pending["email"],
                "broker": pending["broker"],
                "minutes": int(c.settings.tan_validity.total_seconds() // 60),
                "error": error_text(request, exc),
                "void": isinstance(exc, TanInvalid) and exc.why != "wrong",
            },
            status=401,
        )
    response = await finish_login(
        request,
        user_id=result.user_id,
        level=Level.BASIC,
        method=METHOD_EMAIL_TAN,
        next_path=next_path,
    )
    if result.device_token:
        response.set_cookie(
            DEVICE_COOKIE,
            result.device_token,
            path="/",
            secure=True,
            httponly=True,
            samesite="Lax",
            max_age=int(c.settings.remember_device_for.total_seconds()),
        )
    return response


async def restricted_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    next_path = next_of(form)
    try:
        result = await asyncio.to_thread(
            restricted_login,
            factory(request),
            broker_number=form_text(form, "broker", 32),
            email=form_text(form, "email", 320),
            client_addr=client_addr(request),
            now=now_of(request),
        )
    except LoginError as exc:
        return show(
            request,
            "broker.html",
            {
                "next": next_path,
                "broker": "",
                "email": "",
                "error": error_text(request, exc),
                "error_field": "broker",
            },
            status=401,
        )
    return await finish_login(
        request,
        user_id=result.user_id,
        level=Level.RESTRICTED,
        method=METHOD_RESTRICTED,
        next_path=next_path,
    )
