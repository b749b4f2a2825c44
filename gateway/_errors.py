"""Errors of the gateway; each becomes a page in exactly one middleware.

::

    GatewayError (Exception)           status + page key, rendered by the error middleware
    ├── UpstreamUnavailable            502: the portal cannot be reached
    ├── UpstreamTimeout                504: the portal did not answer in time
    ├── PathRejected                   400: an ambiguous path spelling (encoded /, NUL, \\ …)
    ├── CsrfRejected                   403: a form without the session's CSRF token (or
    │                                       from another origin)
    ├── LoginRefused                   403: this user may not log in by any method
    │                                       (``ca.login_refusal``: user or office deactivated)
    ├── MalformedBody                  400: a form or JSON body we cannot read
    │   ├── BodyTooLarge               413: over the app's client_max_size
    │   └── UnsupportedBody            415: a body that is neither a form nor JSON
    └── StoreUnavailable               503: the database cannot be reached; we fail closed
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ca import LoginRefusal


class GatewayError(Exception):
    """A failure the broker sees as a page. ``page`` names the template/message set."""

    status: int = 500
    page: str = "error"

    def __init__(self, detail: str) -> None:
        self.detail = detail  # for logs; never shown verbatim to the broker
        super().__init__(detail)


class UpstreamUnavailable(GatewayError):
    status = 502
    page = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    page = "upstream_timeout"


class PathRejected(GatewayError):
    """The request path is spelt in a way different servers read differently (docs/gateway.md)."""

    status = 400
    page = "bad_path"


class CsrfRejected(GatewayError):
    status = 403
    page = "csrf"


class LoginRefused(GatewayError):
    """A factor was right, but the user may not log in (issue 13): the page says why and
    whom to ask (``gateway.web._firm_access.login_refused_page``), never a login form."""

    status = 403
    page = "login_refused"

    def __init__(self, refusal: LoginRefusal, *, user_id: int) -> None:
        self.refusal = refusal
        self.user_id = user_id
        super().__init__(f"user {user_id} may not log in: {refusal.reason}")


class MalformedBody(GatewayError):
    """A request body the gateway's own pages cannot read: invalid UTF-8 or charset, broken
    multipart, invalid or too deeply nested JSON, not a JSON object (issue 17)."""

    status = 400
    page = "bad_request"


class BodyTooLarge(MalformedBody):
    status = 413
    page = "too_large"


class UnsupportedBody(MalformedBody):
    """A non-empty body of a content type the endpoint does not take."""

    status = 415


class StoreUnavailable(GatewayError):
    """The store cannot be read, so identity and revocation state are unknown: fail closed."""

    status = 503
    page = "store_unavailable"
