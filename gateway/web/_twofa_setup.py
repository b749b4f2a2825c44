"""The 2FA set-up in three steps (issue 14, seed 000 "Zwei-Faktor Authentifizierung
aktivieren"): 1. confirm once with a code mailed to the user's address, 2. choose and set up
the method (authenticator app or passkey), 3. the method is used from the next login on.

Step 1 is needed for a first enrolment and for every replacement: the TOTP and passkey
enrolment handlers (``gateway.web._account``) ask :func:`setup_needed` and consume the
confirmation once a factor is enrolled. Every step still needs a fresh, password-proven
session (``require_fresh``, ``email_only_refusal``): a broker-number + TAN session proves the
mailbox only, and the mailed code proves it again, never a second thing.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.auth._middleware import request_state, require_csrf
from gateway.logins._errors import SetupCodeInvalid, TooSoon
from gateway.logins._setup_code import (
    SETUP_CODE_KEY,
    SETUP_VERIFIED_KEY,
    audit_code_entry,
    check_setup_code,
    is_verified,
    send_setup_code,
    verified_record,
)
from gateway.web._common import (
    P,
    client_addr,
    ctx,
    email_only_refusal,
    error_text,
    factory,
    form_text,
    next_of,
    now_of,
    page_url,
    read_form,
    redirect,
    refresh_session,
    require_fresh,
    require_user,
    see_other,
    show,
    update_session_data,
)
from gateway.web._formatting import time_for
from gateway.web._pages import CATALOGS, chosen_language, page_language
from store import Level, User, transaction

SETUP = f"{P}/2fa/setup"
METHOD = f"{SETUP}/method"
DONE = f"{SETUP}/done"
METHODS = ("totp", "passkey")


def _session_data(request: web.Request) -> dict[str, Any]:
    session = request_state(request).session
    return dict(session.data) if session is not None else {}


def setup_verified(request: web.Request, user_id: int) -> bool:
    """Step 1 was passed in this session (read :func:`refresh_session` first)."""
    record = _session_data(request).get(SETUP_VERIFIED_KEY)
    return is_verified(record, user_id=user_id, now=now_of(request))


async def setup_needed(
    request: web.Request, user_id: int, *, back: str, as_json: bool = False
) -> web.Response | None:
    """The answer sending the broker to step 1 when it was not passed, else ``None``.

    SECURITY: called by every enrolment handler after ``require_fresh``, so no factor is
    added or replaced without the mailed code (issue 14).
    """
    await refresh_session(request)  # step 1 may have been passed on another replica
    if setup_verified(request, user_id):
        return None
    target = page_url(SETUP, next=back)
    if as_json:
        text = request.app[CATALOGS].translate(page_language(request), "twofa_setup.needed")
        return web.json_response({"error": text, "redirect": target}, status=403)
    return see_other(target)


async def consume_setup(request: web.Request) -> None:
    """A factor was enrolled: the confirmation is used up (the next one needs a new code)."""
    await update_session_data(request, **{SETUP_VERIFIED_KEY: None, SETUP_CODE_KEY: None})


def _guard(request: web.Request, back: str) -> web.Response | int:
    """The user id of a fresh, password-proven session, or the page refusing a TAN one."""
    require_user(request, level=Level.BASIC)
    refused = email_only_refusal(request, back=back)
    if refused is not None:
        return refused
    return require_fresh(request, level=Level.BASIC, back=back)


def _user_facts(request: web.Request, user_id: int) -> dict[str, Any]:
    with transaction(factory(request)) as session:
        user = session.get(User, user_id)
        assert user is not None
        return {"email": user.email, "totp_active": user.totp_confirmed_at is not None}


async def _step_one(
    request: web.Request,
    user_id: int,
    next_path: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    facts = await asyncio.to_thread(_user_facts, request, user_id)
    record = _session_data(request).get(SETUP_CODE_KEY)
    pending = (
        isinstance(record, dict)
        and record.get("user_id") == user_id
        and _expiry(record) > now_of(request)
    )
    return show(
        request,
        "twofa_setup.html",
        {
            "step": 1,
            "next": next_path,
            "email": facts["email"],
            "pending": pending,
            "expires": time_for(request, _expiry(record)) if pending else "",
            "error": error,
        },
        status=status,
    )


def _expiry(record: Any) -> datetime:
    return datetime.fromisoformat(str(record["expires_at"]))


async def setup_page(request: web.Request) -> web.StreamResponse:
    """Step 1: send the code, enter it."""
    next_path = next_of(request.query)
    here = page_url(SETUP, next=next_path)
    guarded = _guard(request, here)
    if isinstance(guarded, web.Response):
        return guarded
    await refresh_session(request)
    if setup_verified(request, guarded):
        return see_other(page_url(METHOD, next=next_path))
    return await _step_one(request, guarded, next_path)


async def setup_submit(request: web.Request) -> web.StreamResponse:
    """Step 1's forms: ``action=send`` mails a (new) code, ``action=confirm`` checks it."""
    form = await read_form(request)
    require_csrf(request, form)
    next_path = next_of(form)
    guarded = _guard(request, page_url(SETUP, next=next_path))
    if isinstance(guarded, web.Response):
        return guarded
    user_id = guarded
    c = ctx(request)
    state = request_state(request)
    assert state.session is not None  # a logged-in user has a session
    now = now_of(request)
    if form.get("action") == "send":
        try:
            record = await asyncio.to_thread(
                send_setup_code,
                factory(request),
                user_id=user_id,
                session_id=state.session.id,
                key=c.setup_code_key,
                mail_sealer=c.outbox_sealer,
                limits=c.settings.limits,
                client_addr=client_addr(request),
                now=now,
                language=chosen_language(request),
            )
        except TooSoon as exc:
            await refresh_session(request)
            return await _step_one(
                request, user_id, next_path, error=error_text(request, exc), status=429
            )
        await update_session_data(request, **{SETUP_CODE_KEY: record})
        return see_other(page_url(SETUP, next=next_path))
    await refresh_session(request)  # SECURITY: the attempts another replica counted
    state = request_state(request)
    assert state.session is not None
    check = check_setup_code(
        state.session.data.get(SETUP_CODE_KEY),
        code=form_text(form, "code", 16),
        user_id=user_id,
        session_id=state.session.id,
        key=c.setup_code_key,
        limits=c.settings.limits,
        now=now,
    )
    await asyncio.to_thread(
        audit_code_entry,
        factory(request),
        user_id=user_id,
        check=check,
        limits=c.settings.limits,
        client_addr=client_addr(request),
        now=now,
    )
    if check.why is None:
        await update_session_data(
            request,
            **{SETUP_CODE_KEY: None, SETUP_VERIFIED_KEY: verified_record(user_id, now)},
        )
        return see_other(page_url(METHOD, next=next_path))
    await update_session_data(request, **{SETUP_CODE_KEY: check.record})
    failure = SetupCodeInvalid(check.why, attempts_left=check.attempts_left)
    return await _step_one(
        request, user_id, next_path, error=error_text(request, failure), status=400
    )


async def method_page(request: web.Request) -> web.StreamResponse:
    """Step 2: the authenticator app or a passkey."""
    next_path = next_of(request.query)
    here = page_url(METHOD, next=next_path)
    guarded = _guard(request, here)
    if isinstance(guarded, web.Response):
        return guarded
    if (needed := await setup_needed(request, guarded, back=next_path)) is not None:
        return needed
    facts = await asyncio.to_thread(_user_facts, request, guarded)
    return show(
        request,
        "twofa_setup.html",
        {
            "step": 2,
            "next": next_path,
            "email": facts["email"],
            "totp_active": facts["totp_active"],
            "totp_url": page_url(f"{P}/account/totp", next=next_path),
        },
        script=True,
    )


def done_url(method: str, next_path: str) -> str:
    """Step 3's address after ``method`` was set up, returning to ``next_path``."""
    return page_url(DONE, method=method, next=next_path)


async def done_page(request: web.Request) -> web.StreamResponse:
    """Step 3: from the next login on, the new method is asked for."""
    require_user(request, level=Level.BASIC)
    method = request.query.get("method", "")
    if method not in METHODS:
        raise redirect(f"{P}/account#twofa")
    return show(
        request,
        "twofa_setup.html",
        {"step": 3, "method": method, "next": next_of(request.query)},
    )
