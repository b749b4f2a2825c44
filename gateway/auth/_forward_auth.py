"""Forward-auth mode: the original request a front proxy asks us about.

A front proxy (nginx ``auth_request``, Caddy ``forward_auth``, Traefik ``ForwardAuth``)
terminates TLS, asks ``/_gateway/auth`` whether a request may pass, and proxies it to the
portal itself. The one contract all of them can speak is Traefik's (Caddy sends it as it
is; the shipped nginx config sets it)::

    X-Forwarded-Method: POST
    X-Forwarded-Uri:    /antrag/neu?x=1      (the request target, as the client sent it)
    X-Forwarded-Host:   portal.example

The client certificate comes with the subrequest in ``gateway.terminator_format``
(``gateway.auth._terminator``), the session cookie in the forwarded ``Cookie`` header.

# SECURITY: these headers are believed only from ``gateway.trusted_proxies``. From anyone
# else the endpoint answers nothing but a refusal: a client that reaches the gateway
# directly must not learn, let alone obtain, a decision for a request it describes itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway._errors import GatewayError
from gateway._settings import GatewaySettings
from gateway.tls._trusted_peers import is_trusted_peer

__all__ = [
    "FORWARD_AUTH_PATH",
    "FORWARD_AUTH_ROUTE",
    "PAGE_HEADER",
    "PORTAL_TIMEOUT_PATH",
    "PORTAL_UNAVAILABLE_PATH",
    "ForwardAuthRefused",
    "OriginalRequest",
    "asks_for_the_page",
    "original_request",
]

FORWARD_AUTH_ROUTE = "forward_auth"
FORWARD_AUTH_PATH = "/_gateway/auth"
METHOD_HEADER = "X-Forwarded-Method"
URI_HEADER = "X-Forwarded-Uri"
HOST_HEADER = "X-Forwarded-Host"
# Sent by the shipped nginx config when it fetches the page for a refusal (its
# ``@brokergate_page``): that request is proxied to the browser, not read by
# ``auth_request``, so the page may keep its own status (503, 502 …) instead of 403.
PAGE_HEADER = "X-Brokergate-Page"
# The pages a front shows when it cannot reach the portal itself (nginx ``error_page 502``
# and ``504``): the same clear pages, status and metric as the standalone proxy's.
PORTAL_UNAVAILABLE_PATH = "/_gateway/portal/unavailable"
PORTAL_TIMEOUT_PATH = "/_gateway/portal/timeout"
# RFC 9110 method token; anything longer than the longest WebDAV method is not one.
_MAX_METHOD = 32


class ForwardAuthRefused(GatewayError):
    """A decision subrequest we must not answer (403 page): not from a trusted proxy, or
    without the original method and URI (a front configured without them)."""

    status = 403
    page = "forward_auth_refused"

    def __init__(self, problem: str) -> None:
        super().__init__(f"/_gateway/auth refused: {problem} (docs/forward-auth.md)")


@dataclass(frozen=True, kw_only=True)
class OriginalRequest:
    """The request the front proxy asks about."""

    method: str
    target: str  # path and query as the client sent them (still to be normalised)
    host: str | None

    @property
    def raw_path(self) -> str:
        return self.target.split("?", 1)[0]


def _single(request: web.Request, name: str) -> str | None:
    values = request.headers.getall(name, ())
    if len(values) > 1:
        # SECURITY: a front that appends instead of replacing would let a client put its own
        # copy first; refuse rather than guess which one is real.
        raise ForwardAuthRefused(f"{name} sent {len(values)} times; expected once")
    return values[0].strip() if values else None


def original_request(request: web.Request, settings: GatewaySettings) -> OriginalRequest:
    """The original method, target and host of a decision subrequest from a trusted front.

    Raises:
        ForwardAuthRefused: the peer is not in ``trusted_proxies``, or a header is missing,
            repeated or malformed.
    """
    if not is_trusted_peer(request, settings.trusted_networks):
        raise ForwardAuthRefused(f"peer {request.remote!r} is not in gateway.trusted_proxies")
    method = _single(request, METHOD_HEADER)
    target = _single(request, URI_HEADER)
    if not method or not target:
        raise ForwardAuthRefused(f"{METHOD_HEADER} and {URI_HEADER} are required")
    if len(method) > _MAX_METHOD or not method.isascii() or not method.isalpha():
        raise ForwardAuthRefused(f"{METHOD_HEADER} is not an HTTP method")
    if not target.startswith("/"):
        raise ForwardAuthRefused(f"{URI_HEADER} must be an origin-form target (/path?query)")
    return OriginalRequest(method=method.upper(), target=target, host=_single(request, HOST_HEADER))


def asks_for_the_page(request: web.Request, settings: GatewaySettings) -> bool:
    """True for a trusted front's request for a refusal's page (``PAGE_HEADER: 1``)."""
    return request.headers.get(PAGE_HEADER) == "1" and is_trusted_peer(
        request, settings.trusted_networks
    )
