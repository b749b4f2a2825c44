"""The route policy's decision as a page: for requests bound upstream, pass, or answer
with the login, step-up, 2FA prompt or certificate-problem page instead of the proxy.

The decision itself is pure (``gateway.auth._route_policy.decide``); this middleware
normalises the path, asks it, and renders."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway._paths import normalise_path
from gateway._settings import RESERVED_PREFIX
from gateway._state import (
    CLOCK,
    SETTINGS,
    UPSTREAM_ROUTE,
)
from gateway.auth._certificate_identity import CertificateProblem
from gateway.auth._middleware import (
    request_state,
)
from gateway.auth._route_policy import Outcome, decide, request_auth, required_for
from gateway.web._core_pages import certificate_problem_page
from gateway.web._firm_access import login_refused_page, no_right_page
from gateway.web._formatting import time_for
from gateway.web._idle_notice import idle_logout_after
from gateway.web._pages import (
    render_page,
    safe_next,
    step_up_context,
)
from gateway.web._renewal_notice import renewal_interstitial

log = logging.getLogger("gateway")


async def policy_answer(
    request: web.Request, *, raw_path: str, method: str, interstitial: bool = True
) -> web.StreamResponse | None:
    """The route policy's answer for a request bound upstream: None to pass it on, or the
    login, step-up, 2FA prompt, certificate-problem, login-refused or no-right page (also
    the renewal interstitial when ``interstitial``). The one decision of the standalone
    proxy and forward-auth.

    Raises:
        PathRejected: ``raw_path`` is a spelling servers read differently (400 page).
        web.HTTPNotFound: the path lies under the reserved prefix.
    """
    app = request.app
    settings = app[SETTINGS]
    state = request_state(request)
    normalised = normalise_path(raw_path)  # PathRejected → 400 page
    if normalised.path.lower().startswith(RESERVED_PREFIX.lower()):
        raise web.HTTPNotFound()  # SECURITY: the reserved prefix is never forwarded
    state.path = normalised
    requirement = required_for(normalised.path, method, settings.routes, settings.default_level)
    now = app[CLOCK]()
    decision = decide(
        auth=request_auth(state, now),
        requirement=requirement,
        now=now,
        twofa_deadline=settings.twofa_deadline_at,
    )
    next_path = safe_next(normalised.forward)
    if decision.outcome is Outcome.ALLOW:
        return await renewal_interstitial(request, state, next_path) if interstitial else None
    if state.refusal is not None:
        # Issue 13: the user (or office) was deactivated: say so, not "please log in".
        return login_refused_page(request, state.refusal)
    if decision.outcome is Outcome.NO_RIGHT:
        assert decision.missing_right is not None
        identity = state.identity
        firm = identity.firm if identity is not None else None
        return no_right_page(
            request, decision.missing_right, firm.rights_contact if firm is not None else None
        )
    if decision.outcome is Outcome.CERTIFICATE_PROBLEM:
        assert isinstance(state.certificate, CertificateProblem)
        return certificate_problem_page(
            request, state.certificate, next_path, required=decision.required
        )
    if decision.outcome is Outcome.LOGIN:
        return render_page(
            request,
            "login.html",
            {"next": next_path, "idle_after": idle_logout_after(request)},
            status=401,
        )
    if decision.outcome is Outcome.TWOFA_PROMPT:
        deadline = settings.twofa_deadline_at
        return render_page(
            request,
            "twofa_prompt.html",
            {"next": next_path, "deadline": time_for(request, deadline)},
            status=403,
        )
    return render_page(
        request,
        "step_up.html",
        step_up_context(request, next_path=next_path, required=decision.required.value),
        status=403,
    )


def policy_middleware() -> Any:
    """Factory: decides, for requests bound upstream, whether they pass or get a page."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        if route.name != UPSTREAM_ROUTE:
            return await handler(request)
        answer = await policy_answer(request, raw_path=request.raw_path, method=request.method)
        return answer if answer is not None else await handler(request)

    return impl
