"""The gateway's own core pages: login chooser, step-up, certificate problem, logout,
logout everywhere, the 2FA "Not now" hook, and the security headers on every answer."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

from aiohttp import web

from gateway._settings import RESERVED_PREFIX
from gateway._state import CLOCK, SETTINGS
from gateway.auth._certificate_identity import CertificateProblem
from gateway.auth._middleware import (
    logout,
    logout_everywhere,
    request_state,
    require_csrf,
)
from gateway.auth._request_state import SESSIONS
from gateway.web._common import read_form
from gateway.web._firm_access import login_refused_page
from gateway.web._formatting import time_for
from gateway.web._idle_notice import idle_logout_after
from gateway.web._pages import (
    LOGIN_OPTIONS,
    render_page,
    safe_next,
    step_up_context,
)
from store import (
    Level,
)

log = logging.getLogger("gateway")


HSTS = "max-age=31536000"  # one year; the gateway is HTTPS-only by design


def certificate_problem_page(
    request: web.Request,
    problem: CertificateProblem,
    next_path: str,
    *,
    required: Level | None = None,
) -> web.Response:
    """The page for a certificate that cannot log in; its other ways in are only those
    that can reach ``required`` (the route's level; ``None``: any)."""
    if problem.refusal is not None:
        # Issue 13: the certificate's user or office is deactivated; no other login works
        # either, so the page says whom to ask instead of offering the login forms.
        return login_refused_page(request, problem.refusal)
    options = request.app[LOGIN_OPTIONS]
    if required is not None:
        options = [o for o in options if o.can_reach(required.value)]
    return render_page(
        request,
        "certificate_problem.html",
        {
            "problem": problem,
            "when_since": time_for(request, problem.since),
            "when_until": time_for(request, problem.until),
            "next": next_path,
            "login_options": options,
            # The TAN login never reaches strong: name only the ways that do.
            "other_login_key": "certificate.other_login_strong"
            if required is Level.STRONG
            else "certificate.other_login",
        },
        status=403,
    )


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # SECURITY: HSTS on every response (pages and proxied), nosniff unless the upstream set it.
    response.headers.setdefault("Strict-Transport-Security", HSTS)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


async def login_page(request: web.Request) -> web.StreamResponse:
    state = request_state(request)
    next_path = safe_next(request.query.get("next"))
    if isinstance(state.certificate, CertificateProblem) and state.identity is None:
        return certificate_problem_page(request, state.certificate, next_path)
    if state.refusal is not None and state.identity is None:
        return login_refused_page(request, state.refusal)
    if state.identity is not None and state.identity.level.satisfies(Level.BASIC):
        raise web.HTTPSeeOther(next_path)
    return render_page(
        request, "login.html", {"next": next_path, "idle_after": idle_logout_after(request)}
    )


async def step_up_page(request: web.Request) -> web.StreamResponse:
    next_path = safe_next(request.query.get("next"))
    required = request.query.get("level", Level.STRONG.value)
    if required not in {level.value for level in Level}:
        required = Level.STRONG.value
    return render_page(
        request, "step_up.html", step_up_context(request, next_path=next_path, required=required)
    )


async def certificate_page(request: web.Request) -> web.StreamResponse:
    state = request_state(request)
    if isinstance(state.certificate, CertificateProblem):
        return certificate_problem_page(request, state.certificate, "/")
    raise web.HTTPSeeOther("/")


async def logout_handler(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    await logout(request)
    return render_page(request, "logged_out.html")


async def logout_everywhere_handler(request: web.Request) -> web.StreamResponse:
    form = await read_form(request)
    require_csrf(request, form)
    # The account page's tick "Auch gespeicherte Browser vergessen" (issue 14).
    forget_devices = form.get("forget_devices") == "yes"
    await logout_everywhere(request, forget_devices=forget_devices)
    return render_page(request, "logged_out.html", {"devices_forgotten": forget_devices})


async def twofa_not_now_handler(request: web.Request) -> web.StreamResponse:
    """The policy hook for "Not now": only a basic session before the deadline may skip."""
    form = await read_form(request)
    require_csrf(request, form)
    app = request.app
    state = request_state(request)
    deadline = app[SETTINGS].twofa_deadline_at
    now = app[CLOCK]()
    next_path = safe_next(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
    if state.session is None or deadline is None or now >= deadline:
        raise web.HTTPSeeOther(f"{RESERVED_PREFIX}/step-up?next={quote(next_path, safe='/')}")
    await asyncio.to_thread(
        app[SESSIONS].update, state.session, now=now, twofa_prompt_dismissed=True
    )
    raise web.HTTPSeeOther(next_path)
