"""The production wiring for ``brokergate gateway serve``: app, TLS context and metrics.

Each factory is called inside a worker process (see ``gateway.tls._workers``), so engines,
SSL contexts and connection pools are never shared across a fork.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence

from aiohttp import web

from ca import FirmSettings
from gateway._app import create_app
from gateway._metrics import GatewayMetrics
from gateway._settings import GatewaySettings
from gateway._state import FACTORY
from gateway.proxy._forwarder import ProxyForwarder, certificate_source_for
from gateway.tls._context import create_server_context
from gateway.tls._workers import AppFactory, MetricsRefresh, SSLContextFactory
from store import Clock, make_engine, session_factory, system_clock


def gateway_app_factory(
    *,
    settings: GatewaySettings,
    store_url: str,
    secret_key: bytes,
    clock: Clock = system_clock,
    extensions: Sequence[Callable[[web.Application], None]] = (),
    firms: FirmSettings | None = None,
) -> AppFactory:
    """``factory(tls, metrics)`` → ``create_app`` with the real proxy and certificate source."""

    def factory(tls: ssl.SSLContext | None, metrics: GatewayMetrics) -> web.Application:
        forwarder = ProxyForwarder(settings, metrics=metrics)
        app = create_app(
            settings=settings,
            store_url=store_url,
            secret_key=secret_key,
            forward=forwarder,
            clock=clock,
            certificate_source=certificate_source_for(settings),
            tls_context=tls,
            metrics=metrics,
            extensions=extensions,
            firms=firms,
        )
        app.cleanup_ctx.append(forwarder.pool_context)
        return app

    return factory


def ssl_context_factory(*, settings: GatewaySettings, store_url: str) -> SSLContextFactory:
    """Direct mode: the listener's mTLS context; terminator mode: None (plain HTTP).

    The CA names start from the store's current trust material; the app keeps them current
    when generations rotate or retire.
    """

    def factory() -> ssl.SSLContext | None:
        if settings.terminator_format != "none":
            return None
        from ca import load_trust_material  # the public, passphrase-free part of ca

        engine = make_engine(store_url)
        try:
            with session_factory(engine)() as session:
                material = load_trust_material(session)
        finally:
            engine.dispose()
        issuers = [cert for _, cert in sorted(material.issuing_by_generation.items())]
        return create_server_context(
            cert_chain=settings.server_cert,
            private_key=settings.server_key,
            client_ca_issuers=issuers,
        )

    return factory


def store_metrics_refresh(
    settings: GatewaySettings, *, clock: Clock = system_clock
) -> MetricsRefresh:
    """Scrapes recompute active sessions and expiring certificates from the app's store."""

    def bind(app: web.Application, metrics: GatewayMetrics) -> Callable[[], object]:
        def refresh() -> bool:
            return metrics.refresh_from_store(
                app[FACTORY], now=clock(), idle_timeout=settings.idle_timeout
            )

        return refresh

    return bind
