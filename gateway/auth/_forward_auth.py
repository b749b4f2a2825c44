"""Forward-auth mode: the original request a front proxy asks us about.

A front proxy (nginx ``auth_request``, Caddy ``forward_auth``, Traefik ``ForwardAuth``,
Envoy ``ext_authz``) terminates TLS, asks us whether a request may pass, and proxies it to
the portal itself. Two forms name the original request:

``/_gateway/auth`` (:func:`original_request`), Traefik's contract; Caddy sends it as it is
and the shipped nginx config sets it::

    X-Forwarded-Method: POST
    X-Forwarded-Uri:    /antrag/neu?x=1      (the request target, as the client sent it)
    X-Forwarded-Host:   portal.example

``/_gateway/auth/envoy/<original target>`` (:func:`envoy_original_request`), Envoy's
``ext_authz`` HTTP service, registered only with ``terminator_format = "envoy"``: Envoy
sends the original method, ``Host`` and ``Path`` with ``path_prefix`` put in front of the
path (and query), and no ``X-Forwarded-Method/-Uri`` (Envoy's ``ext_authz.proto``,
``HttpService.path_prefix`` and ``AuthorizationRequest``; ``ext_authz_http_impl.cc``)::

    POST /_gateway/auth/envoy/antrag/neu?x=1
    Host: portal.example
    Content-Length: 0

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
    "DECISION_ROUTES",
    "ENVOY_AUTH_ROUTE",
    "ENVOY_PATH_PREFIX",
    "FAILURE_HEADER",
    "FORWARD_AUTH_PATH",
    "FORWARD_AUTH_ROUTE",
    "PAGE_HEADER",
    "PORTAL_TIMEOUT_PATH",
    "PORTAL_UNAVAILABLE_PATH",
    "ForwardAuthRefused",
    "OriginalRequest",
    "asks_for_the_page",
    "decision_request",
    "envoy_original_request",
    "front_found_the_store_unavailable",
    "original_request",
]

FORWARD_AUTH_ROUTE = "forward_auth"
FORWARD_AUTH_PATH = "/_gateway/auth"
ENVOY_AUTH_ROUTE = "forward_auth_envoy"
# Envoy's http_service.path_prefix (deploy/envoy/envoy.yaml): without a trailing "/", since
# Envoy appends the original path, which starts with one.
ENVOY_PATH_PREFIX = "/_gateway/auth/envoy"
DECISION_ROUTES = frozenset({FORWARD_AUTH_ROUTE, ENVOY_AUTH_ROUTE})
"""The routes that answer a front's decision (the same one, in each front's form)."""
METHOD_HEADER = "X-Forwarded-Method"
URI_HEADER = "X-Forwarded-Uri"
HOST_HEADER = "X-Forwarded-Host"
# Sent by the shipped nginx config when it fetches the page for a refusal (its
# ``@brokergate_page``): that request is proxied to the browser, not read by
# ``auth_request``, so the page may keep its own status (503, 502 …) instead of 403.
PAGE_HEADER = "X-Brokergate-Page"
# On a refusal because the store could not be reached, the decision says so in this header
# (value ``store_unavailable``); the shipped nginx config passes it on to its page fetch,
# which then answers the 503 page at once instead of waiting on the store a second time
# (issue 18: SQLite locked, a broker waited up to twice the busy timeout behind nginx).
FAILURE_HEADER = "X-Brokergate-Failure"
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


def envoy_original_request(request: web.Request, settings: GatewaySettings) -> OriginalRequest:
    """The original request of an Envoy ``ext_authz`` check from a trusted front: its own
    method and ``Host``, and its target after :data:`ENVOY_PATH_PREFIX`.

    Raises:
        ForwardAuthRefused: the peer is not in ``trusted_proxies``, ``Host`` is repeated,
            or the target after the prefix is not an origin-form one.
    """
    if not is_trusted_peer(request, settings.trusted_networks):
        raise ForwardAuthRefused(f"peer {request.remote!r} is not in gateway.trusted_proxies")
    # raw_path: the target as Envoy sent it (still percent-encoded, with its query), so
    # the route policy normalises exactly what the portal will get.
    target = request.raw_path[len(ENVOY_PATH_PREFIX) :]
    if not target.startswith("/"):
        raise ForwardAuthRefused(
            f"the path must be {ENVOY_PATH_PREFIX} followed by the original path "
            "(Envoy http_service.path_prefix)"
        )
    return OriginalRequest(method=request.method, target=target, host=_single(request, "Host"))


def decision_request(request: web.Request, settings: GatewaySettings) -> OriginalRequest | None:
    """The original request if ``request`` asks for a front's decision (by the route aiohttp
    matched), else None.

    Raises:
        ForwardAuthRefused: as :func:`original_request` / :func:`envoy_original_request`.
    """
    resource = request.match_info.route.resource
    name = resource.name if resource is not None else None
    if name == FORWARD_AUTH_ROUTE:
        return original_request(request, settings)
    if name == ENVOY_AUTH_ROUTE:
        return envoy_original_request(request, settings)
    return None


def asks_for_the_page(request: web.Request, settings: GatewaySettings) -> bool:
    """True for a trusted front's request for a refusal's page (``PAGE_HEADER: 1``)."""
    return request.headers.get(PAGE_HEADER) == "1" and is_trusted_peer(
        request, settings.trusted_networks
    )


def front_found_the_store_unavailable(request: web.Request, settings: GatewaySettings) -> bool:
    """True for a trusted front's page fetch after a decision that could not reach the
    store (``FAILURE_HEADER: store_unavailable``): its page is the 503 page, whatever the
    store says now. It grants nothing, so a front that sends it wrongly only shows that page.
    """
    return (
        asks_for_the_page(request, settings)
        and request.headers.get(FAILURE_HEADER) == "store_unavailable"
    )
