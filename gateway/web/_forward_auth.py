"""``/_gateway/auth``: the decision a front proxy asks for, in each front's contract.

The same decision as the standalone proxy (``gateway.web._policy_pages.policy_answer``)
on the original request (``gateway.auth._forward_auth``), answered as:

* **allow** — ``200`` with the ``X-Brokergate-*`` identity headers and the signed
  assertion (nginx ``auth_request_set``, Caddy ``copy_headers``, Traefik
  ``authResponseHeaders``), and ``Set-Cookie`` when single sign-on started or rotated a
  session (the front copies it onto the response to the browser);
* **nobody logged in** — ``401`` with the login page;
* **anything else** — ``403`` with the page the standalone gateway shows (step-up, 2FA
  prompt, certificate problem, a rejected path, the reserved prefix, the store being
  down). nginx ``auth_request`` turns every status but 2xx, 401 and 403 into a 500 for
  the browser, so :func:`forward_auth_status_middleware` (outermost) sends every other
  non-2xx answer as 403 with its page; Caddy and Traefik pass the page on as it is.
  When nginx then fetches that page for the browser (``@brokergate_page``, marked with
  ``X-Brokergate-Page: 1``), it keeps its own status: the broker's browser and the
  front's logs see 503 for "temporarily unavailable", not 403.

The front proxies the portal itself, so it also needs our page when the portal cannot be
reached: :func:`portal_unavailable` and :func:`portal_timeout` (nginx ``error_page 502``
and ``504``) answer the standalone proxy's 502 and 504 pages, counted in the same metric.

The renewal interstitial is not shown in this mode (the front proxies the portal's page
itself); the renewal headers and the portal banner still tell the broker.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway._errors import StoreUnavailable, UpstreamTimeout, UpstreamUnavailable
from gateway._state import SETTINGS
from gateway.auth._forward_auth import FAILURE_HEADER, FORWARD_AUTH_ROUTE, asks_for_the_page
from gateway.auth._middleware import ORIGINAL_REQUEST, request_state
from gateway.proxy._upstream_handler import upstream_identity_headers
from gateway.web._pages import safe_next
from gateway.web._policy_pages import policy_answer

__all__ = [
    "forward_auth_decision",
    "forward_auth_status_middleware",
    "portal_timeout",
    "portal_unavailable",
]


async def forward_auth_decision(request: web.Request) -> web.StreamResponse:
    original = request[ORIGINAL_REQUEST]
    answer = await policy_answer(
        # The target with its query, as the standalone proxy passes ``request.raw_path``:
        # the login page's ``next=`` returns to the page as it was asked for (issue 16).
        request,
        raw_path=original.target,
        method=original.method,
        interstitial=False,
    )
    if answer is None:
        if asks_for_the_page(request, request.app[SETTINGS]):
            # nginx asks for the page only after a first decision said no. If this one says
            # yes (the store came back in between, issue 18), an empty 200 would reach the
            # browser: send it back to where it was going, method and body kept (307).
            return web.Response(
                status=307,
                headers={"Location": safe_next(original.target), "Cache-Control": "no-store"},
            )
        state = request_state(request)
        return web.Response(status=200, headers=upstream_identity_headers(request, state.identity))
    return answer


async def portal_unavailable(request: web.Request) -> web.StreamResponse:
    raise UpstreamUnavailable("the front proxy could not reach the portal")


async def portal_timeout(request: web.Request) -> web.StreamResponse:
    raise UpstreamTimeout("the portal did not answer the front proxy in time")


def _auth_request_status(status: int) -> int:
    """The status nginx ``auth_request`` understands for ``status``: 2xx and 401 as they
    are, everything else 403 (nginx would answer the browser 500 for it)."""
    return status if 200 <= status < 300 or status == 401 else 403


def forward_auth_status_middleware() -> Any:
    """Factory: on ``/_gateway/auth`` only, every non-2xx answer other than 401 becomes
    403 with its page; outermost, so the error pages of ``error_middleware`` are included."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name != FORWARD_AUTH_ROUTE or asks_for_the_page(
            request, request.app[SETTINGS]
        ):
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # aiohttp's own answers (e.g. 405); the error middleware lets them through.
            if _auth_request_status(exc.status) == exc.status:
                raise
            return web.Response(status=403, text=exc.text, content_type="text/plain")
        status = _auth_request_status(response.status)
        if status != response.status and not response.prepared:
            if response.status == StoreUnavailable.status:  # the page fetch need not wait
                response.headers[FAILURE_HEADER] = StoreUnavailable.page
            response.set_status(status)
        return response

    return impl
