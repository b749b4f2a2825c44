"""Login pages: password (+ TOTP / recovery code / passkey), passkey alone, and
re-authentication for actions that need a fresh login."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime, timedelta

from aiohttp import web

from gateway.auth._middleware import complete_login, request_state, require_csrf
from gateway.logins._errors import (
    LoginError,
    PasskeyRejected,
)
from gateway.logins._history import (
    METHOD_PASSKEY,
    METHOD_PASSWORD,
    proven_by_email_only,
    session_method,
)
from gateway.logins._passkeys import authentication_options, finish_authentication
from gateway.logins._password_login import login_with_password
from gateway.logins._second_factor import verify_second_factor
from gateway.web._common import (
    PENDING_KEY,
    P,
    client_addr,
    ctx,
    ensure_session,
    error_text,
    factory,
    form_text,
    is_fresh,
    json_body,
    next_of,
    now_of,
    page_url,
    read_form,
    refresh_session,
    require_user,
    see_other,
    show,
    trust_hints,
    update_session_data,
)
from gateway.web._finish_login import (
    CHALLENGE_KEY,
    finish_login,
    pending_user,
    user_facts,
)
from store import FRESH_BASIC_KEY, Level, User, transaction

# --- password (+ second factor)


async def password_page(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    return show(request, "password.html", {"next": next_of(request.query), "identifier": ""})


async def password_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
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
            **trust_hints(request),
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
    await refresh_session(request)  # the password step may have run on another replica
    pending = pending_user(request)
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
    form = await read_form(request)
    require_csrf(request, form)
    next_path = next_of(form)
    await refresh_session(request)
    pending = pending_user(request)
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
            **trust_hints(request),
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


async def passkey_page(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    return show(request, "passkey.html", {"next": next_of(request.query)}, script=True)


async def passkey_options(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    await json_body(request)
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
    body = await json_body(request)
    next_path = next_of(body)
    await refresh_session(request)  # SECURITY: a challenge used on another replica is gone
    challenge = _take_challenge(request, "login")
    await update_session_data(request, **{CHALLENGE_KEY: None})  # SECURITY: single use
    pending = pending_user(request)
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
    identity = request_state(request).identity
    if mode == "reauth" and identity is not None:
        level = max(level, identity.level, key=lambda lv: lv.rank)
    response = await finish_login(
        request, user_id=result.user_id, level=level, method=METHOD_PASSKEY, next_path=next_path
    )
    return web.json_response({"redirect": response.headers["Location"]})


# --- re-authentication (fresh login for downloads and security changes)


async def reauth_page(request: web.Request) -> web.StreamResponse:
    user_id = require_user(request, level=Level.BASIC)
    next_path = next_of(request.query)
    level = Level.STRONG if request.query.get("level") == "strong" else Level.BASIC
    identity = request_state(request).identity
    if is_fresh(request, level=level) and identity is not None and identity.level.satisfies(level):
        return see_other(next_path)
    facts = await asyncio.to_thread(user_facts, request, user_id)
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
    form = await read_form(request)
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
                **trust_hints(request),
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
                **trust_hints(request),
                sealer=c.totp_sealer,
                settings=c.settings,
                now=now_of(request),
                record=False,
            )
            achieved = Level.STRONG
    except LoginError as exc:
        facts = await asyncio.to_thread(user_facts, request, user_id)
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
    if achieved.rank < current.level.rank or (
        # SECURITY (issue 14): the password re-confirmed in a TAN session stays fresh for
        # basic actions only; the session keeps its method (a full password login, which
        # asks for the second factor, makes it a password session).
        achieved is Level.BASIC and proven_by_email_only(current.method)
    ):
        await _note_weaker_reauth(request)
        return see_other(next_path)
    await complete_login(request, user_id=user_id, level=achieved, method=session_method(method))
    return see_other(next_path)


async def _note_weaker_reauth(request: web.Request) -> None:
    """A factor weaker than the session's level was re-confirmed (the password in a strong
    session): fresh for basic actions only.

    SECURITY: rotating the session would set ``authenticated_at``, which stands for a
    factor of the session's own level, and let a strong action (second-factor reset) or a
    ``fresh_within`` strong route through on the password alone.
    """
    await update_session_data(request, **{FRESH_BASIC_KEY: now_of(request).isoformat()})
