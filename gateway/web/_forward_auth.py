"""``/_gateway/auth``: the decision a front proxy asks for, in each front's contract.

The same decision as the standalone proxy (``gateway.web._policy_pages.policy_answer``)
on the original request (``gateway.auth._forward_auth``), answered as:

* **allow** — ``200`` with the ``X-Brokergate-*`` identity headers and the signed
  assertion (nginx ``auth_request_set``, Caddy ``copy_headers``, Traefik
  ``authResponseHeaders``), and ``Set-Cookie`` when single sign-on started or rotated a
  session (the front copies it onto the response to the browser);
* **nobody logged in** — ``401`` with the login page;
* **anything else** — ``403`` with the page the standalone gateway shows (step-up, 2FA
  prompt, certificate problem). nginx ``auth_request`` treats every status but 2xx, 401
  and 403 as an error, so pages answered with another status go out as 403; Caddy and
  Traefik pass the page to the browser as it is.

The renewal interstitial is not shown in this mode (the front proxies the portal's page
itself); the renewal headers and the portal banner still tell the broker.
"""

from __future__ import annotations

from aiohttp import web

from gateway.auth._middleware import ORIGINAL_REQUEST, request_state
from gateway.proxy._upstream_handler import upstream_identity_headers
from gateway.web._policy_pages import policy_answer

__all__ = ["forward_auth_decision"]


async def forward_auth_decision(request: web.Request) -> web.StreamResponse:
    original = request[ORIGINAL_REQUEST]
    answer = await policy_answer(
        request, raw_path=original.raw_path, method=original.method, interstitial=False
    )
    if answer is None:
        state = request_state(request)
        return web.Response(status=200, headers=upstream_identity_headers(request, state.identity))
    if answer.status != 401:
        answer.set_status(403)
    return answer
