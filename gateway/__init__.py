"""The mTLS gateway: TLS, client-certificate identity, sessions, logins, route policy, proxy.

The public face for the CLI and for the login pages (docs/gateway.md has the full API).
"""

from gateway._app import create_app, identity_of
from gateway._errors import (
    BodyTooLarge,
    CsrfRejected,
    GatewayError,
    LoginRefused,
    MalformedBody,
    PathRejected,
    StoreUnavailable,
    UnsupportedBody,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway._metrics import GatewayMetrics
from gateway._service import gateway_app_factory, ssl_context_factory, store_metrics_refresh
from gateway._settings import RESERVED_PREFIX, GatewaySettings, RouteRule
from gateway._state import CLOCK, FACTORY, METRICS, SETTINGS, UPSTREAM_ROUTE
from gateway.auth._certificate_identity import CertificateProblem, Identity, ProblemKind
from gateway.auth._middleware import (
    complete_login,
    logout,
    logout_everywhere,
    request_state,
    require_csrf,
    tls_certificate_source,
)
from gateway.auth._request_state import SESSIONS, RequestState
from gateway.auth._route_policy import (
    Decision,
    Outcome,
    RequestAuth,
    Requirement,
    check_route_rights,
    decide,
    required_for,
)
from gateway.auth._sessions import NewSession, Sessions, SessionState, csrf_ok
from gateway.proxy._forwarder import ProxyForwarder
from gateway.proxy._identity_headers import (
    ASSERTION,
    IDENTITY_HEADER_PREFIX,
    normalise_header_name,
)
from gateway.tls._context import TLSSetupError, create_server_context, set_client_ca_names
from gateway.tls._workers import SSL_READ_BUFFER, ServeOptions, run_worker, serve
from gateway.web._i18n import LANGUAGES, Catalogs, load_catalogs, negotiate_language
from gateway.web._pages import CATALOGS, LOGIN_OPTIONS, LoginOption, render_page, safe_next
from gateway.web._routes import ca_authority_factory, setup_logins

__all__ = [
    "ASSERTION",
    "CATALOGS",
    "CLOCK",
    "FACTORY",
    "IDENTITY_HEADER_PREFIX",
    "LANGUAGES",
    "LOGIN_OPTIONS",
    "METRICS",
    "RESERVED_PREFIX",
    "SESSIONS",
    "SETTINGS",
    "SSL_READ_BUFFER",
    "UPSTREAM_ROUTE",
    "BodyTooLarge",
    "Catalogs",
    "CertificateProblem",
    "CsrfRejected",
    "Decision",
    "GatewayError",
    "GatewayMetrics",
    "GatewaySettings",
    "Identity",
    "LoginOption",
    "LoginRefused",
    "MalformedBody",
    "NewSession",
    "Outcome",
    "PathRejected",
    "ProblemKind",
    "ProxyForwarder",
    "RequestAuth",
    "RequestState",
    "Requirement",
    "RouteRule",
    "ServeOptions",
    "SessionState",
    "Sessions",
    "StoreUnavailable",
    "TLSSetupError",
    "UnsupportedBody",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "ca_authority_factory",
    "check_route_rights",
    "complete_login",
    "create_app",
    "create_server_context",
    "csrf_ok",
    "decide",
    "gateway_app_factory",
    "identity_of",
    "load_catalogs",
    "logout",
    "logout_everywhere",
    "negotiate_language",
    "normalise_header_name",
    "render_page",
    "request_state",
    "require_csrf",
    "required_for",
    "run_worker",
    "safe_next",
    "serve",
    "set_client_ca_names",
    "setup_logins",
    "ssl_context_factory",
    "store_metrics_refresh",
    "tls_certificate_source",
]
