"""The route policy's decision as a page: for requests bound upstream, pass, or answer
with the login, step-up, 2FA prompt or certificate-problem page instead of the proxy.

The decision itself is pure (``gateway.auth._route_policy.decide``); this middleware
normalises the path, asks it, and renders."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
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
from gateway.auth._certificate_identity import CertificateProblem, Identity
from gateway.auth._decision_memo import (
    DECISION_MEMO,
    MEMO_BASIS,
    REUSED_HEADERS,
    AllowMemo,
    MemoBasis,
    allow_until,
    memoisable,
)
from gateway.auth._middleware import (
    request_state,
)
from gateway.auth._request_state import SESSIONS
from gateway.auth._route_policy import (
    Decision,
    Outcome,
    Requirement,
    decide,
    request_auth,
    required_for,
)
from gateway.auth._sessions import touch_interval_for
from gateway.proxy._identity_cache import IDENTITY_HEADERS
from gateway.web._core_pages import certificate_problem_page
from gateway.web._firm_access import login_refused_page, no_right_page
from gateway.web._formatting import time_for
from gateway.web._idle_notice import idle_logout_after
from gateway.web._pages import (
    render_page,
    safe_next,
    step_up_context,
)
from gateway.web._renewal_notice import (
    NOTICE_SEEN_KEY,
    renewal_interstitial,
    renewal_interstitial_from,
)

log = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True)
class _Decided:
    """The route policy's decision for a request and what it was made on."""

    requirement: Requirement
    decision: Decision
    now: datetime


def _decide(request: web.Request, *, raw_path: str, method: str) -> _Decided:
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
    return _Decided(requirement=requirement, decision=decision, now=now)


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
    decided = _decide(request, raw_path=raw_path, method=method)
    return await _answer(request, decided.decision, interstitial=interstitial)


def _next_path(request: web.Request) -> str:
    """Where a page returns to (only pages use it: not computed for an allow)."""
    path = request_state(request).path
    assert path is not None  # set by _decide
    return safe_next(path.forward)


async def _answer(
    request: web.Request, decision: Decision, *, interstitial: bool
) -> web.StreamResponse | None:
    settings = request.app[SETTINGS]
    state = request_state(request)
    if decision.outcome is Outcome.ALLOW:
        if not interstitial:
            return None
        return await renewal_interstitial(request, state, _next_path(request))
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
    next_path = _next_path(request)
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


def _remember_allow(request: web.Request, basis: MemoBasis, decided: _Decided) -> None:
    """After a plain allow (no page): the identity headers for the upstream, and the
    connection's memo entry when the allow may be reused (``gateway.auth._decision_memo``)."""
    app = request.app
    state = request_state(request)
    if not memoisable(state):
        return
    identity, session, now = state.identity, state.session, decided.now
    assert identity is not None and session is not None
    if app[SESSIONS].cached(session.id) is not session:
        return  # changed while deciding (another request's touch): decide afresh next time
    interstitial_from = renewal_interstitial_from(identity, now)
    if interstitial_from is not None and interstitial_from <= now:
        if not session.data.get(NOTICE_SEEN_KEY):
            return  # the interstitial is due (only a non-navigation request got here)
        interstitial_from = None  # shown once per session: the session object says so
    headers, headers_until = app[IDENTITY_HEADERS].headers_until(identity, now)
    request[REUSED_HEADERS] = headers
    settings = app[SETTINGS]
    until = allow_until(
        session=session,
        identity=identity,
        requirement=decided.requirement,
        now=now,
        touch_interval=touch_interval_for(settings.idle_timeout),
        twofa_deadline=settings.twofa_deadline_at,
        bounds=(interstitial_from, headers_until),
    )
    memo = AllowMemo(
        certificate=state.certificate if isinstance(state.certificate, Identity) else None,
        session=session,
        identity=identity,
        headers=dict(headers),
        trust_generation=basis.trust_generation,
        since=now,
        until=until,
    )
    app[DECISION_MEMO].remember(basis, memo)


def policy_middleware() -> Any:
    """Factory: decides, for requests bound upstream, whether they pass or get a page.

    A request the auth middleware answered from the connection's memo (issue 11) passes:
    its allow was decided on an earlier request and still holds."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        if route.name != UPSTREAM_ROUTE or REUSED_HEADERS in request:
            return await handler(request)
        decided = _decide(request, raw_path=request.raw_path, method=request.method)
        answer = await _answer(request, decided.decision, interstitial=True)
        if answer is not None:
            return answer
        basis = request.get(MEMO_BASIS)
        if basis is not None:
            _remember_allow(request, basis, decided)
        return await handler(request)

    return impl
