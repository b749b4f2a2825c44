"""The language switch in the pages' header (issue 16): a choice that sticks.

``POST /_gateway/language`` (``lang``, ``back``, ``csrf``) sets the ``__Host-bg-lang``
cookie, which every later page of ours reads before Accept-Language
(``gateway.web._pages.page_language``), and answers 303 to ``back``: the page the switch
was on, with its query (``next=`` above all; validated like every ``next``).

The mails follow the users' stored locale (``users.locale``). It is written

* here, when the form carries the session's CSRF token and a logged-in user (basic or
  more: a restricted session is not proven to be the user) chose the language, and
* at a login (``remember_chosen_language``, a CSRF-checked POST), when the broker chose
  the language on the login pages before.

A form without a valid token (no session yet, a stale page) only sets the cookie: a
preference cookie is no state change of the account, so it needs no token; the store is
never written without one.

Before a login, the mails a page asks for (the TAN, the password reset link and notice,
an activation link) go out in the chosen language (``chosen_language``), without storing
it: nobody has proven yet to be the user.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from aiohttp import web

from gateway._errors import CsrfRejected, MalformedBody
from gateway.auth._middleware import request_state, require_csrf
from gateway.web._common import factory, form_text, now_of, read_form, see_other
from gateway.web._i18n import LANGUAGES
from gateway.web._pages import LANGUAGE_COOKIE, chosen_language, safe_next
from store import Level, User, record_audit, transaction

__all__ = ["language_submit", "remember_chosen_language", "set_language_cookie"]

# A preference the broker set once: a year (browsers cap cookie lifetimes at 400 days).
LANGUAGE_COOKIE_MAX_AGE = timedelta(days=365)


def set_language_cookie(response: web.StreamResponse, language: str) -> None:
    """The choice on ``response``: Secure, SameSite=Lax, Path=/ (``__Host-``). HttpOnly:
    no script of ours reads it."""
    response.set_cookie(
        LANGUAGE_COOKIE,
        language,
        max_age=int(LANGUAGE_COOKIE_MAX_AGE.total_seconds()),
        path="/",
        secure=True,
        httponly=True,
        samesite="Lax",
    )


def _store_locale(request: web.Request, user_id: int, language: str) -> None:
    with transaction(factory(request)) as session:
        user = session.get(User, user_id)
        if user is not None and user.locale != language:
            record_audit(
                session,
                actor=f"user:{user_id}",
                action="user.locale",
                now=now_of(request),
                user_id=user_id,
                details={"from": user.locale, "to": language},
            )
            user.locale = language


async def remember_chosen_language(request: web.Request, user_id: int) -> None:
    """At a login: the language the broker chose on the login pages becomes the user's
    locale (their mails follow it). Call only from a CSRF-checked POST."""
    language = chosen_language(request)
    if language is not None:
        await asyncio.to_thread(_store_locale, request, user_id, language)


async def language_submit(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    language = form_text(form, "lang", 8)
    if language not in LANGUAGES:
        raise MalformedBody(f"unknown language {language[:8]!r}, expected one of {LANGUAGES}")
    back = safe_next(form_text(form, "back", 2048))
    identity = request_state(request).identity
    if identity is not None and identity.level.satisfies(Level.BASIC):
        try:
            require_csrf(request, form)
        except CsrfRejected:
            pass  # a stale page: the cookie only (see the module docstring)
        else:
            await asyncio.to_thread(_store_locale, request, identity.user_id, language)
    response = see_other(back)
    set_language_cookie(response, language)
    return response
