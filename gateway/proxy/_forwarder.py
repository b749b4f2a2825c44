"""Wiring of the proxy and terminator mode into ``create_app``.

::

    forwarder = ProxyForwarder(settings, metrics=metrics)
    app = create_app(..., forward=forwarder,
                     certificate_source=certificate_source_for(settings))
    app.cleanup_ctx.append(forwarder.pool_context)   # opens and closes the upstream pool
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from gateway._metrics import GatewayMetrics
from gateway._settings import GatewaySettings
from gateway.auth._middleware import tls_certificate_source
from gateway.auth._request_state import CertificateSource
from gateway.auth._terminator import ForwardedCertificates, forwarded_certificate_headers
from gateway.proxy._reverse_proxy import proxy_request
from gateway.proxy._upstream import Upstream, make_upstream
from gateway.proxy._websocket_guard import WebSocketGuard


class ProxyForwarder:
    """``await forwarder(request, identity_headers=..., websocket_guard=None)``; owns one
    upstream pool per app.

    The pool is opened by :meth:`pool_context` (append it to the app's ``cleanup_ctx``) in
    the app's own event loop, and closed on the app's shutdown.
    """

    def __init__(self, settings: GatewaySettings, *, metrics: GatewayMetrics | None = None):
        self._settings = settings
        self._metrics = metrics
        self._trusted = settings.trusted_networks
        self._strip = forwarded_certificate_headers(settings)
        # SECURITY: the session cookie is the gateway's bearer credential.
        self._gateway_cookies = (settings.session_cookie_name,)
        self._upstream: Upstream | None = None

    async def pool_context(self, app: web.Application) -> AsyncIterator[None]:
        self._upstream = make_upstream(self._settings)
        try:
            yield
        finally:
            upstream, self._upstream = self._upstream, None
            await upstream.close()

    async def __call__(
        self,
        request: web.Request,
        *,
        identity_headers: Mapping[str, str],
        path_qs: str | None = None,
        websocket_guard: WebSocketGuard | None = None,
        html_insert: str | None = None,
    ) -> web.StreamResponse:
        if self._upstream is None:
            raise RuntimeError("ProxyForwarder.pool_context is not in the app's cleanup_ctx")
        return await proxy_request(
            request,
            upstream=self._upstream,
            identity_headers=identity_headers,
            trusted_proxies=self._trusted,
            strip_headers=self._strip,
            gateway_cookies=self._gateway_cookies,
            path_qs=path_qs,
            metrics=self._metrics,
            websocket_guard=websocket_guard,
            html_insert=html_insert,
        )


def certificate_source_for(settings: GatewaySettings) -> CertificateSource:
    """Direct mode: the TLS connection; terminator mode: the trusted terminator's header."""
    if settings.terminator_format == "none":
        return tls_certificate_source

    return ForwardedCertificates(settings)
