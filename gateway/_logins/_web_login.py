"""Login pages: password (+ TOTP / recovery code / passkey), passkey alone, broker number +
TAN (seed 001), "continue without email" (restricted), re-authentication, the 2FA prompt
(seed 000) and account activation (seed 003)."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from gateway._auth import complete_login, request_state, require_csrf
from gateway._logins._activation import activate, check_activation
from gateway._logins._devices import COOKIE_NAME as DEVICE_COOKIE
from gateway._logins._errors import (
    ActivationInvalid,
    InvalidBrokerNumber,
    LoginError,
    PasskeyRejected,
    PasswordRejected,
    TanInvalid,
    UnknownEmail,
)
from gateway._logins._history import METHOD_EMAIL_TAN, METHOD_PASSKEY, METHOD_PASSWORD
from gateway._logins._passkeys import authentication_options, finish_authentication
from gateway._logins._password_login import login_with_password, second_factors_of
from gateway._logins._second_factor import verify_second_factor
from gateway._logins._tan import (
    DeviceRecognised,
    TanSent,
    confirm_tan,
    restricted_login,
    start_broker_login,
)
from gateway._logins._web import (
    PENDING_KEY,
    PENDING_TTL_SECONDS,
    P,
    client_addr,
    ctx,
    ensure_session,
    error_text,
    factory,
    form_text,
    format_time,
    is_fresh,
    next_of,
    now_of,
    page_url,
    require_user,
    see_other,
    show,
    update_session_data,
)
from gateway._pages import page_language
from gateway._state import SESSIONS, SETTINGS
from store import Level, User, record_audit, transaction

TAN_KEY = "logins.tan"  # session data: the TAN on its way (id, email, broker number)
CHALLENGE_KEY = "logins.challenge"  # session data: the WebAuthn challenge (base64), single use
METHOD_RESTRICTED = "broker-number"


# --- after a successful factor


def _user_facts(request: web.Request, user_id: int) -> dict[str, Any]:
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
    await complete_login(request, user_id=user_id, level=level, method=method)
    new_state = request_state(request).session
    assert new_state is not None
    new_state = await asyncio.to_thread(
        request.app[SESSIONS].update, new_state, now=now_of(request), data=data
    )
    request_state(request).session = new_state
    if level is Level.BASIC and method == METHOD_PASSWORD:
        facts = await asyncio.to_thread(_user_facts, request, user_id)
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


def _pending_user(request: web.Request) -> dict[str, Any] | None:
    state = request_state(request)
    pending = state.session.data.get(PENDING_KEY) if state.session else None
    if not isinstance(pending, dict):
        return None
    at = datetime.fromisoformat(pending["at"])
    if now_of(request) - at > timedelta(seconds=PENDING_TTL_SECONDS):
        return None
    return pending


# --- password (+ second factor)


async def password_page(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    return show(request, "password.html", {"next": next_of(request.query), "identifier": ""})


async def password_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    require_csrf(request, form)
    next_path = next_of(form)
    identifier = form_text(form, "identifier", 320)
    c = ctx(request)
    try:
        result = await asyncio.to_thread(
            login_with_password,
            factory(request),
            identifier=identifier,
            password=form_text(form, "password"),
            client_addr=client_addr(request),
            settings=c.settings,
            now=now_of(request),
        )
    except LoginError as exc:
        return show(
            request,
            "password.html",
            {"next": next_path, "identifier": identifier, "error": error_text(request, exc)},
            status=401,
        )
    if result.needs_second_factor:
        await update_session_data(
            request,
            **{
                PENDING_KEY: {
                    "user": result.user_id,
                    "at": now_of(request).isoformat(),
                    "factors": list(result.second_factors),
                }
            },
        )
        return see_other(page_url(f"{P}/login/second-factor", next=next_path))
    return await finish_login(
        request,
        user_id=result.user_id,
        level=Level.BASIC,
        method=METHOD_PASSWORD,
        next_path=next_path,
    )


async def second_factor_page(request: web.Request) -> web.StreamResponse:
    pending = _pending_user(request)
    next_path = next_of(request.query)
    if pending is None:
        return see_other(page_url(f"{P}/login/password", next=next_path))
    return show(
        request,
        "second_factor.html",
        {"next": next_path, "factors": pending["factors"], "action": f"{P}/login/second-factor"},
        script="passkey" in pending["factors"],
    )


async def second_factor_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    require_csrf(request, form)
    next_path = next_of(form)
    pending = _pending_user(request)
    if pending is None:
        return see_other(page_url(f"{P}/login/password", next=next_path))
    c = ctx(request)
    try:
        method = await asyncio.to_thread(
            verify_second_factor,
            factory(request),
            user_id=int(pending["user"]),
            code=form_text(form, "code", 64),
            client_addr=client_addr(request),
            sealer=c.totp_sealer,
            settings=c.settings,
            now=now_of(request),
        )
    except LoginError as exc:
        return show(
            request,
            "second_factor.html",
            {
                "next": next_path,
                "factors": pending["factors"],
                "error": error_text(request, exc),
                "action": f"{P}/login/second-factor",
            },
            status=401,
            script="passkey" in pending["factors"],
        )
    return await finish_login(
        request,
        user_id=int(pending["user"]),
        level=Level.STRONG,
        method=method,
        next_path=next_path,
    )


# --- passkeys (JSON endpoints for our script)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="expected JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    require_csrf(request, {"csrf": body.get("csrf")})
    return body


async def passkey_page(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    return show(request, "passkey.html", {"next": next_of(request.query)}, script=True)


async def passkey_options(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    await _json_body(request)
    ceremony = authentication_options(ctx(request).rp)
    await update_session_data(
        request,
        **{
            CHALLENGE_KEY: {
                "value": base64.b64encode(ceremony.challenge).decode(),
                "at": now_of(request).isoformat(),
                "purpose": "login",
            }
        },
    )
    return web.Response(text=ceremony.options_json, content_type="application/json")


def _take_challenge(request: web.Request, purpose: str) -> bytes | None:
    state = request_state(request)
    stored = state.session.data.get(CHALLENGE_KEY) if state.session else None
    if not isinstance(stored, dict) or stored.get("purpose") != purpose:
        return None
    if now_of(request) - datetime.fromisoformat(stored["at"]) > timedelta(minutes=5):
        return None
    return base64.b64decode(stored["value"])


async def passkey_verify(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    next_path = next_of(body)
    challenge = _take_challenge(request, "login")
    await update_session_data(request, **{CHALLENGE_KEY: None})  # SECURITY: single use
    pending = _pending_user(request)
    mode = body.get("mode")
    expected: int | None = None
    if mode == "second-factor" and pending is not None:
        expected = int(pending["user"])
    elif mode == "reauth":
        expected = require_user(request, level=Level.RESTRICTED)
    if challenge is None:
        return web.json_response(
            {"error": error_text(request, PasskeyRejected("no challenge"))}, status=400
        )
    try:
        result = await asyncio.to_thread(
            finish_authentication,
            factory(request),
            credential_json=json.dumps(body.get("credential")),
            challenge=challenge,
            rp=ctx(request).rp,
            now=now_of(request),
            client_addr=client_addr(request),
            expected_user_id=expected,
        )
    except LoginError as exc:
        return web.json_response({"error": error_text(request, exc)}, status=401)
    # A passkey after the password is the second factor: strong whatever the UV flag says.
    level = Level.STRONG if expected is not None else result.level
    if mode == "reauth":
        level = max(level, request_state(request).identity.level, key=lambda lv: lv.rank)  # type: ignore[union-attr]
    response = await finish_login(
        request, user_id=result.user_id, level=level, method=METHOD_PASSKEY, next_path=next_path
    )
    return web.json_response({"redirect": response.headers["Location"]})


# --- broker number + TAN (seed 001)


async def broker_page(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    return show(request, "broker.html", {"next": next_of(request.query), "broker": "", "email": ""})


async def broker_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
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
    form = await request.post()
    require_csrf(request, form)
    next_path = next_of(form)
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
    form = await request.post()
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


# --- re-authentication (fresh login for downloads and security changes)


async def reauth_page(request: web.Request) -> web.StreamResponse:
    user_id = require_user(request, level=Level.BASIC)
    next_path = next_of(request.query)
    level = Level.STRONG if request.query.get("level") == "strong" else Level.BASIC
    if is_fresh(request) and request_state(request).identity.level.satisfies(level):  # type: ignore[union-attr]
        return see_other(next_path)
    facts = await asyncio.to_thread(_user_facts, request, user_id)
    return show(
        request,
        "reauth.html",
        {
            "next": next_path,
            "level": level.value,
            "factors": facts["factors"],
            "action": f"{P}/reauth",
        },
        script="passkey" in facts["factors"],
    )


async def reauth_submit(request: web.Request) -> web.StreamResponse:
    user_id = require_user(request, level=Level.BASIC)
    form = await request.post()
    require_csrf(request, form)
    next_path = next_of(form)
    level = Level.STRONG if form.get("level") == "strong" else Level.BASIC
    c = ctx(request)
    current = request_state(request).identity
    assert current is not None
    try:
        if form.get("kind") == "password" and level is Level.BASIC:
            with transaction(factory(request)) as session:
                user = session.get(User, user_id)
                assert user is not None
                email = user.email
            await asyncio.to_thread(
                login_with_password,
                factory(request),
                identifier=email,
                password=form_text(form, "password"),
                client_addr=client_addr(request),
                settings=c.settings,
                now=now_of(request),
            )
            method = METHOD_PASSWORD
            achieved = Level.BASIC
        else:
            method = await asyncio.to_thread(
                verify_second_factor,
                factory(request),
                user_id=user_id,
                code=form_text(form, "code", 64),
                client_addr=client_addr(request),
                sealer=c.totp_sealer,
                settings=c.settings,
                now=now_of(request),
                record=False,
            )
            achieved = Level.STRONG
    except LoginError as exc:
        facts = await asyncio.to_thread(_user_facts, request, user_id)
        return show(
            request,
            "reauth.html",
            {
                "next": next_path,
                "level": level.value,
                "factors": facts["factors"],
                "action": f"{P}/reauth",
                "error": error_text(request, exc),
            },
            status=401,
            script="passkey" in facts["factors"],
        )
    new_level = max(achieved, current.level, key=lambda lv: lv.rank)
    await complete_login(
        request,
        user_id=user_id,
        level=new_level,
        method=method if achieved.rank >= current.level.rank else current.method,
    )
    return see_other(next_path)


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
            "deadline_text": format_time(deadline, page_language(request)),
        },
    )


async def twofa_prompt_submit(request: web.Request) -> web.StreamResponse:
    user_id = require_user(request, level=Level.BASIC)
    form = await request.post()
    require_csrf(request, form)
    next_path = next_of(form)
    open_, deadline = _deadline_open(request)
    if form.get("action") != "not_now" or not open_:
        return see_other(page_url(f"{P}/account/totp", next=next_path))
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
    form = await request.post()
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


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(f"{P}/login/password", password_page)
    router.add_post(f"{P}/login/password", password_submit)
    router.add_get(f"{P}/login/second-factor", second_factor_page)
    router.add_post(f"{P}/login/second-factor", second_factor_submit)
    router.add_get(f"{P}/login/passkey", passkey_page)
    router.add_post(f"{P}/login/passkey/options", passkey_options)
    router.add_post(f"{P}/login/passkey/verify", passkey_verify)
    router.add_get(f"{P}/login/broker", broker_page)
    router.add_post(f"{P}/login/broker", broker_submit)
    router.add_get(f"{P}/login/broker/tan", tan_page)
    router.add_post(f"{P}/login/broker/tan", tan_submit)
    router.add_post(f"{P}/login/broker/restricted", restricted_submit)
    router.add_get(f"{P}/reauth", reauth_page)
    router.add_post(f"{P}/reauth", reauth_submit)
    router.add_get(f"{P}/2fa/prompt", twofa_prompt_page)
    router.add_post(f"{P}/2fa/prompt", twofa_prompt_submit)
    router.add_get(f"{P}/activate/{{token}}", activation_page)
    router.add_post(f"{P}/activate/{{token}}", activation_submit)


__all__ = ["add_routes"]
