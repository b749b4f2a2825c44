""" "Passwort vergessen?" pages (issue 14; seeds 002/004 "Zugangsdaten vergessen").

* ``GET/POST /_gateway/password/forgot``: the email form; the answer ("if an account has
  this address, a link is on its way") is the same page, byte for byte, and takes at least
  :data:`ANSWER_FLOOR` whether or not the account exists.
* ``GET /_gateway/password/reset/<token>``: the new-password form (mail scanners fetch
  links, so a GET changes nothing); ``POST`` sets it, ends every session of the user and
  sends to the password login — where the second factor is still asked for.
* ``GET/POST /_gateway/activation/request``: "Konto aktivieren" (seed 003): email + broker
  number → a fresh activation mail for a user not activated yet; the same one answer and
  floor as the forgotten password.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from gateway._settings import RESERVED_PREFIX
from gateway._state import SETTINGS
from gateway.auth._middleware import request_state, require_csrf
from gateway.auth._request_state import SESSIONS
from gateway.logins._errors import LoginError, PasswordResetLinkInvalid
from gateway.logins._password_reset import (
    PASSWORD_RESET_PATH,
    check_password_reset,
    request_password_reset,
    reset_password,
)
from gateway.web._banner import drop_account_nav
from gateway.web._common import (
    P,
    client_addr,
    ctx,
    ensure_session,
    error_text,
    factory,
    form_text,
    now_of,
    read_form,
    show,
)
from gateway.web._pages import chosen_language

FORGOT = f"{P}/password/forgot"
RESET = f"{P}{PASSWORD_RESET_PATH}"
# SECURITY: the answer takes at least this long either way, so its timing does not tell
# whether the address has an account (queueing a link costs a few writes more than not).
ANSWER_FLOOR = 0.4  # seconds; well above the store's write time, short for a person


async def forgot_page(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    return show(request, "password_forgot.html", {})


async def forgot_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    started = time.monotonic()
    public_url = request.app[SETTINGS].public_url.rstrip("/")
    c = ctx(request)
    await asyncio.to_thread(
        request_password_reset,
        factory(request),
        email=form_text(form, "email", 320),
        link_base=f"{public_url}{RESERVED_PREFIX}{PASSWORD_RESET_PATH}/",
        mail_sealer=c.outbox_sealer,
        settings=c.settings,
        client_addr=client_addr(request),
        now=now_of(request),
        language=chosen_language(request),
    )
    await asyncio.sleep(max(0.0, ANSWER_FLOOR - (time.monotonic() - started)))
    # SECURITY: one page for every outcome; the address typed is not echoed either.
    minutes = int(c.settings.password_reset_validity.total_seconds() // 60)
    return show(request, "password_forgot.html", {"sent": True, "minutes": minutes})


def _min_length(request: web.Request) -> int:
    return ctx(request).settings.password_min_length


async def reset_page(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    token = request.match_info["token"]
    try:
        email = await asyncio.to_thread(
            check_password_reset, factory(request), token=token, now=now_of(request)
        )
    except PasswordResetLinkInvalid as exc:
        return show(
            request, "password_reset.html", {"invalid": error_text(request, exc)}, status=404
        )
    return show(
        request,
        "password_reset.html",
        {"email": email, "token": token, "min_length": _min_length(request)},
    )


async def reset_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    token = request.match_info["token"]
    store = request.app[SESSIONS]
    now = now_of(request)
    c = ctx(request)
    try:
        user_id = await asyncio.to_thread(
            reset_password,
            factory(request),
            token=token,
            password=form_text(form, "password"),
            repeat=form_text(form, "repeat"),
            settings=c.settings,
            mail_sealer=c.outbox_sealer,
            client_addr=client_addr(request),
            now=now,
            end_sessions=lambda db, uid: store.end_all_for_user(uid, now, db=db),
            language=chosen_language(request),
        )
    except PasswordResetLinkInvalid as exc:
        return show(
            request, "password_reset.html", {"invalid": error_text(request, exc)}, status=404
        )
    except LoginError as exc:
        email = await asyncio.to_thread(
            check_password_reset, factory(request), token=token, now=now
        )
        return show(
            request,
            "password_reset.html",
            {
                "email": email,
                "token": token,
                "min_length": _min_length(request),
                "error": error_text(request, exc),
            },
            status=400,
        )
    state = request_state(request)
    if state.session is not None and state.session.user_id == user_id:
        # SECURITY: this browser's session of the user ended with the others.
        state.session, state.identity, state.new_cookie, state.clear_cookie = None, None, None, True
        drop_account_nav()
    return show(request, "password_reset.html", {"done": True})


# --- "Konto aktivieren" on request (issue 14, seed 003): the same answer, the same floor

ACTIVATION_REQUEST = f"{P}/activation/request"


async def activation_request_page(request: web.Request) -> web.StreamResponse:
    await ensure_session(request)
    return show(request, "activation_request.html", {})


async def activation_request_submit(request: web.Request) -> web.StreamResponse:
    from gateway.logins._activation import activation_link_base
    from gateway.logins._activation_request import request_activation

    form = await read_form(request)
    require_csrf(request, form)
    started = time.monotonic()
    c = ctx(request)
    await asyncio.to_thread(
        request_activation,
        factory(request),
        email=form_text(form, "email", 320),
        broker_number=form_text(form, "broker", 32),
        link_base=activation_link_base(request.app[SETTINGS].public_url),
        mail_sealer=c.outbox_sealer,
        settings=c.settings,
        client_addr=client_addr(request),
        now=now_of(request),
        language=chosen_language(request),
    )
    await asyncio.sleep(max(0.0, ANSWER_FLOOR - (time.monotonic() - started)))
    # SECURITY: one page for every outcome; nothing typed is echoed.
    return show(request, "activation_request.html", {"sent": True})
