"""The gateway application: ``create_app(...)`` wires state, middlewares and routes.

Middlewares, outermost first (each a factory, see aiohttp ``normalize_path_middleware``):

0. ``forward_auth_status_middleware`` (``gateway.web._forward_auth``, forward-auth mode
   only) — on ``/_gateway/auth``, every non-2xx answer but 401 goes out as 403.
1. :func:`error_middleware` — the ONE place where domain errors (``GatewayError``) and
   unexpected exceptions become pages; users never see a traceback.
2. ``auth_middleware`` (``gateway.auth._middleware``) — certificate, session, single sign-on.
3. :func:`policy_middleware` — for requests bound upstream: path normalisation, the route
   policy, and the login / step-up / 2FA / certificate-problem pages instead of the proxy.

In direct TLS mode a request bound upstream is first looked up in its connection's
decision memo (``gateway.auth._decision_memo``, issue 11): a still valid allow fills the
request's state and identity headers, and the policy middleware lets it pass.

Routes: the gateway's own pages under ``/_gateway/`` (login, step-up, certificate,
logout, logout-everywhere, 2FA "Not now", static CSS), ``/healthz``,
``/.well-known/jwks.json``, and a catch-all that forwards to the upstream through the
injected ``forward`` (gw-proxy's ``proxy_request`` bound to its upstream pool); a
WebSocket upgrade also hands it the guard that closes the socket when its session ends
(``gateway.proxy._websocket_guard``).

Pages of other areas (the logins helper) are added by ``extensions``: callables that get
the app before the catch-all route is registered (aiohttp matches routes in order), e.g.
``create_app(..., extensions=[logins.setup])`` where ``setup(app)`` adds routes under
``/_gateway/`` and appends to ``app[LOGIN_OPTIONS]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from ca import FirmSettings
from gateway._metrics import GatewayMetrics
from gateway._settings import GatewaySettings
from gateway._state import (
    CLOCK,
    FACTORY,
    FIRMS,
    METRICS,
    REFRESH_TASK,
    SETTINGS,
    TLS_CONTEXT,
    UPSTREAM_ROUTE,
)
from gateway.auth._certificate_identity import Identity
from gateway.auth._chain_verification import ChainVerifier
from gateway.auth._decision_memo import DECISION_MEMO, DecisionMemos
from gateway.auth._forward_auth import (
    ENVOY_AUTH_ROUTE,
    ENVOY_PATH_PREFIX,
    FORWARD_AUTH_PATH,
    FORWARD_AUTH_ROUTE,
    PORTAL_TIMEOUT_PATH,
    PORTAL_UNAVAILABLE_PATH,
)
from gateway.auth._middleware import (
    apply_session_cookie,
    auth_middleware,
    request_state,
    tls_certificate_source,
)
from gateway.auth._presented import PresentedCertificates
from gateway.auth._request_state import (
    CERTIFICATE_SOURCE,
    PRESENTED,
    SESSIONS,
    TRUST,
    VERIFIER,
    CertificateSource,
    CurrentVerifier,
)
from gateway.auth._route_policy import check_route_rights
from gateway.auth._sessions import Sessions
from gateway.auth._trust_cache import TrustCache, TrustMaterialLike
from gateway.proxy._assertion import ASSERTION_PURPOSE, SIGNER, AssertionSigner
from gateway.proxy._identity_cache import IDENTITY_HEADERS, IdentityHeaderCache
from gateway.proxy._upstream_handler import FORWARD, PORTAL_INSERT, Forwarder, upstream_handler
from gateway.tls._context import TLSSetupError, set_client_ca_names
from gateway.web._core_pages import security_headers
from gateway.web._error_pages import error_middleware
from gateway.web._forward_auth import (
    forward_auth_decision,
    forward_auth_status_middleware,
    portal_timeout,
    portal_unavailable,
)
from gateway.web._i18n import load_catalogs
from gateway.web._pages import (
    CATALOGS,
    JINJA,
    LOGIN_OPTIONS,
    LoginOption,
    make_environment,
)
from gateway.web._policy_pages import policy_middleware
from gateway.web._portal_banner import portal_banner
from gateway.web._routes import add_core_routes
from store import (
    REMINDER_WINDOW_DAYS,
    Clock,
    Sealer,
    make_engine,
    session_factory,
    system_clock,
)

__all__ = ["create_app", "identity_of"]

log = logging.getLogger("gateway")


def update_client_ca_names(
    context: ssl.SSLContext,
    issuers: Sequence[x509.Certificate],
    metrics: GatewayMetrics | None,
) -> bool:
    """The run-time update of the CertificateRequest's CA names after a rotation or
    retirement. A failure keeps the old list (``set_client_ca_names`` swaps in one call),
    is logged as an error on the gateway's logger and counted
    (``brokergate_client_ca_name_update_failures_total``); returns whether it took."""
    try:
        set_client_ca_names(context, issuers)
    except TLSSetupError as exc:
        log.error("CertificateRequest CA names not updated, the old list stays: %s", exc)
        if metrics is not None:
            metrics.client_ca_name_update_failures.inc()
        return False
    return True


_SIGNER_RELOAD_EVERY = 15  # refresh rounds between re-reads of the assertion keys (~30 s)


# --- middlewares


# --- handlers


# --- life cycle


def _store_context(
    *,
    store_url: str,
    secret_key: bytes,
    trust_loader: Callable[[Any], TrustMaterialLike],
    max_staleness: timedelta,
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        loop = asyncio.get_running_loop()
        engine = make_engine(store_url, pool_size=settings.store_threads)
        factory = session_factory(engine)
        app[FACTORY] = factory
        app[SESSIONS] = Sessions(factory=factory, settings=settings, max_staleness=max_staleness)
        verifier = app[VERIFIER]
        tls_context = app[TLS_CONTEXT]

        def on_trust_change(material: TrustMaterialLike) -> None:
            verifier.verifier = ChainVerifier(
                roots=material.roots, intermediates=material.intermediates
            )
            if tls_context is not None:
                retired = trust.retired_generations
                issuers = [
                    cert
                    for generation, cert in sorted(material.issuing_by_generation.items())
                    if generation not in retired
                ]
                if issuers:
                    loop.call_soon_threadsafe(
                        update_client_ca_names, tls_context, issuers, app.get(METRICS)
                    )

        trust = TrustCache(
            factory=factory,
            trust_loader=trust_loader,
            max_staleness=max_staleness,
            on_trust_change=on_trust_change,
        )
        app[TRUST] = trust
        signer = AssertionSigner(
            factory=factory,
            sealer=Sealer(secret=secret_key, purpose=ASSERTION_PURPOSE),
            issuer=settings.public_url,
            audience=settings.upstream_url,
            lifetime=settings.assertion_lifetime,
        )
        app[SIGNER] = signer
        app[IDENTITY_HEADERS] = IdentityHeaderCache(
            signer=signer,
            zone=settings.zone,
            account_url=settings.account_url,
            window_days=REMINDER_WINDOW_DAYS,
        )
        # Fail loudly at start-up if the store or the keys are not usable.
        await asyncio.to_thread(trust.refresh)
        await asyncio.to_thread(signer.ensure_key, app[CLOCK]())
        stop = asyncio.Event()
        app[REFRESH_TASK] = asyncio.create_task(_refresh_loop(app, stop), name="gateway-refresh")
        try:
            yield
        finally:
            # Not cancel(): a refresh running in a thread would go on using the engine
            # after dispose(); the loop finishes its round and returns.
            stop.set()
            await app[REFRESH_TASK]
            engine.dispose()

    return context


async def _refresh_loop(app: web.Application, stop: asyncio.Event) -> None:
    """Poll revocations, users, sessions and keys every ``revocation_refresh_interval``."""
    interval = app[SETTINGS].revocation_refresh_interval.total_seconds()
    rounds = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        rounds += 1
        try:
            await asyncio.to_thread(app[TRUST].refresh)
            await asyncio.to_thread(app[SESSIONS].refresh_cached)
            if rounds % _SIGNER_RELOAD_EVERY == 0:
                await asyncio.to_thread(app[SIGNER].reload)
        except Exception:
            # The staleness bound makes requests read the store directly (or fail closed).
            log.exception("refresh from the store failed; retrying in %.1fs", interval)


# The shipped front configs (deploy/nginx/forward-auth.conf) cache an allow for at most
# this long; in forward-auth mode a replica's staleness must leave room for it.
FRONT_DECISION_CACHE = timedelta(seconds=2)
_REVOCATION_BOUND = timedelta(seconds=5)  # revocation holds everywhere within 5 s
_MARGIN = timedelta(milliseconds=100)  # below, not at, the bound


def staleness_bound(settings: GatewaySettings, max_staleness: timedelta) -> timedelta:
    """How long the replica's caches may answer without a successful refresh.

    In forward-auth mode the front may serve a cached allow for ``FRONT_DECISION_CACHE``
    after the replica last said yes, so the staleness is capped at 5 s minus that (2.9 s):
    a revocation then reaches the broker within 5 s even while refreshes fail.
    """
    if not settings.forward_auth:
        return max_staleness
    return min(max_staleness, _REVOCATION_BOUND - FRONT_DECISION_CACHE - _MARGIN)


def _default_trust_loader(session: Any) -> TrustMaterialLike:
    # Imported late: the gateway depends on ca only for this public, passphrase-free read.
    from ca import load_trust_material  # type: ignore[attr-defined,unused-ignore]

    material: TrustMaterialLike = load_trust_material(session)
    return material


def create_app(
    *,
    settings: GatewaySettings,
    store_url: str,
    secret_key: bytes,
    forward: Forwarder,
    clock: Clock = system_clock,
    certificate_source: CertificateSource = tls_certificate_source,
    tls_context: ssl.SSLContext | None = None,
    metrics: GatewayMetrics | None = None,
    trust_loader: Callable[[Any], TrustMaterialLike] = _default_trust_loader,
    extensions: Sequence[Callable[[web.Application], None]] = (),
    template_dirs: Sequence[Path] = (),
    max_staleness: timedelta = timedelta(seconds=4),
    firms: FirmSettings | None = None,
) -> web.Application:
    """Build the gateway application (the caller runs it, e.g. with ``web.AppRunner``).

    Args:
        settings: the gateway's settings.
        store_url: database URL; the app opens and disposes of its own engine.
        secret_key: the application secret (seals the assertion signing keys).
        forward: ``await forward(request, identity_headers=..., websocket_guard=...)``;
            gw-proxy's ``proxy_request`` bound to its upstream pool.
        clock: injected time (tests pass a fake clock; never sleep).
        certificate_source: direct mode reads the TLS connection; a terminator mode
            passes its header reader.
        tls_context: the listener's context from ``gateway.tls._context.create_server_context``;
            when given, its CA names follow CA rotations and retirements.
        metrics: gw-proxy's ``GatewayMetrics``; handshakes and logins are counted into it.
        trust_loader: ``ca.load_trust_material``.
        extensions: ``setup(app)`` callables that add routes (before the catch-all).
        template_dirs: extra template folders searched before ``gateway/web/templates``.
        max_staleness: see ``gateway.auth._trust_cache``; must stay below 5 s.
        firms: the ``[firms]`` product catalogue (names on the "no right" page); None:
            the built-in one.

    Raises:
        ValueError: a route names a right that is not in ``firms`` (``load_config``
            reports it first, as a configuration error).
    """
    firms = firms if firms is not None else FirmSettings()
    check_route_rights(settings.routes, firms)
    if max_staleness >= timedelta(seconds=5):
        raise ValueError("max_staleness must be below 5s (revocation within 5s)")
    max_staleness = staleness_bound(settings, max_staleness)
    middlewares = [error_middleware(), auth_middleware(), policy_middleware()]
    if settings.forward_auth:
        middlewares.insert(0, forward_auth_status_middleware())
    app = web.Application(
        middlewares=middlewares,
        client_max_size=1024 * 1024,  # our own forms; proxied bodies are streamed, not read
    )
    app[SETTINGS] = settings
    app[FIRMS] = firms
    app[CLOCK] = clock
    app[FORWARD] = forward
    app[CERTIFICATE_SOURCE] = certificate_source
    app[TLS_CONTEXT] = tls_context
    app[VERIFIER] = CurrentVerifier()
    app[PRESENTED] = PresentedCertificates()
    if certificate_source is tls_certificate_source and not settings.forward_auth:
        # SECURITY: only where one TLS connection is one client's (direct mode, also behind
        # PROXY-protocol passthrough); a terminator's connection carries many clients.
        app[DECISION_MEMO] = DecisionMemos()
    if metrics is not None:
        app[METRICS] = metrics
    app[CATALOGS] = load_catalogs()
    app[JINJA] = make_environment(tuple(template_dirs))
    options: list[LoginOption] = []
    app[LOGIN_OPTIONS] = options
    app.cleanup_ctx.append(
        _store_context(
            store_url=store_url,
            secret_key=secret_key,
            trust_loader=trust_loader,
            max_staleness=max_staleness,
        )
    )
    app.on_response_prepare.append(apply_session_cookie)
    app.on_response_prepare.append(security_headers)

    if settings.portal_renewal_banner:
        app[PORTAL_INSERT] = portal_banner
    router = app.router
    add_core_routes(router)
    if settings.forward_auth:
        router.add_route("*", FORWARD_AUTH_PATH, forward_auth_decision, name=FORWARD_AUTH_ROUTE)
        if settings.terminator_format == "envoy":
            # Only behind Envoy: another front's /_gateway/ location would pass this path
            # on from the trusted peer, and hand the client a decision with its assertion.
            router.add_route(
                "*",
                ENVOY_PATH_PREFIX + "/{original:.*}",
                forward_auth_decision,
                name=ENVOY_AUTH_ROUTE,
            )
        router.add_route("*", PORTAL_UNAVAILABLE_PATH, portal_unavailable)
        router.add_route("*", PORTAL_TIMEOUT_PATH, portal_timeout)
    for extend in extensions:
        extend(app)
    # Last: aiohttp matches in registration order.
    router.add_route("*", "/{tail:.*}", upstream_handler, name=UPSTREAM_ROUTE)
    return app


def identity_of(request: web.Request) -> Identity | None:
    """Who is logged in on this request (None: nobody)."""
    return request_state(request).identity
