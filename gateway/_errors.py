"""Errors of the gateway; each becomes a page in exactly one middleware.

::

    GatewayError (Exception)           status + page key, rendered by the error middleware
    ├── UpstreamUnavailable            502: the portal cannot be reached
    └── UpstreamTimeout                504: the portal did not answer in time
"""

from __future__ import annotations


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
