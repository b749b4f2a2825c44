"""The email-change pages of "My account" (issue 4: needs a fresh strong login).

* ``GET/POST /_gateway/account/email``: the form; a valid new address gets the link, the
  old address a notice.
* ``GET /_gateway/account/email/confirm/<token>``: a button (mail scanners fetch links,
  so a GET never changes anything); ``POST`` applies the change, ends every session of the
  user and offers the new certificate download.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway._settings import RESERVED_PREFIX
from gateway._state import SETTINGS
from gateway.auth._middleware import request_state, require_csrf
from gateway.auth._request_state import SESSIONS, TRUST
from gateway.logins._email_change import (
    EMAIL_CHANGE_PATH,
    check_email_change,
    confirm_email_change,
    request_email_change,
)
from gateway.logins._errors import LoginError
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
    require_fresh,
    show,
)
from store import Level, User, transaction

EMAIL = f"{P}/account/email"
CONFIRM = f"{P}{EMAIL_CHANGE_PATH}"


def _current_email(request: web.Request, user_id: int) -> str:
    with transaction(factory(request)) as session:
        user = session.get(User, user_id)
        assert user is not None
        return user.email


async def _form(
    request: web.Request, user_id: int, *, error: str | None = None, status: int = 200
) -> web.Response:
    email = await asyncio.to_thread(_current_email, request, user_id)
    return show(request, "email_change.html", {"email": email, "error": error}, status=status)


async def email_page(request: web.Request) -> web.StreamResponse:
    user_id = require_fresh(request, level=Level.STRONG, back=EMAIL)
    return await _form(request, user_id)


async def email_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    require_csrf(request, form)
    user_id = require_fresh(request, level=Level.STRONG, back=EMAIL)
    public_url = request.app[SETTINGS].public_url.rstrip("/")
    try:
        sent = await asyncio.to_thread(
            request_email_change,
            factory(request),
            user_id=user_id,
            new_email=form_text(form, "email", 320),
            link_base=f"{public_url}{RESERVED_PREFIX}{EMAIL_CHANGE_PATH}/",
            mail_sealer=ctx(request).outbox_sealer,
            client_addr=client_addr(request),
            now=now_of(request),
        )
    except LoginError as exc:
        return await _form(request, user_id, error=error_text(request, exc), status=400)
    return show(request, "email_change_sent.html", {"new_email": sent.new_email})


async def confirm_page(request: web.Request) -> web.StreamResponse:
    token = request.match_info["token"]
    try:
        new_email = await asyncio.to_thread(
            check_email_change, factory(request), token=token, now=now_of(request)
        )
    except LoginError as exc:
        return show(
            request, "email_change_done.html", {"invalid": error_text(request, exc)}, status=400
        )
    await ensure_session(request)  # the confirm form needs a CSRF token
    return show(request, "email_change_confirm.html", {"new_email": new_email, "token": token})


async def confirm_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    require_csrf(request, form)
    token = request.match_info["token"]
    store = request.app[SESSIONS]
    now = now_of(request)
    try:
        changed = await asyncio.to_thread(
            confirm_email_change,
            factory(request),
            token=token,
            client_addr=client_addr(request),
            now=now,
            end_sessions=lambda db, uid: store.end_all_for_user(uid, now, db=db),
        )
    except LoginError as exc:
        return show(
            request, "email_change_done.html", {"invalid": error_text(request, exc)}, status=400
        )
    # The certificate check compares SAN email == user email from the per-replica trust
    # cache: refresh it now so this replica refuses the old certificate at once (the others
    # follow at their next refresh, within the revocation refresh interval).
    await asyncio.to_thread(request.app[TRUST].refresh)
    state = request_state(request)
    if state.session is not None and state.session.user_id == changed.user_id:
        # SECURITY: this browser's session of the user ended with the others; drop its cookie.
        state.session, state.identity, state.new_cookie, state.clear_cookie = None, None, None, True
        drop_account_nav()  # "Mein Konto / Abmelden" would contradict "you were logged out"
    context: dict[str, Any] = {"new_email": changed.new_email}
    return show(request, "email_change_done.html", context)
