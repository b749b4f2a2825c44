"""The gateway application: ``create_app(...)`` wires state, middlewares and routes.

Middlewares, outermost first (each a factory, see aiohttp ``normalize_path_middleware``):

1. :func:`error_middleware` — the ONE place where domain errors (``GatewayError``) and
   unexpected exceptions become pages; users never see a traceback.
2. ``auth_middleware`` (``gateway._auth``) — certificate, session, single sign-on.
3. :func:`policy_middleware` — for requests bound upstream: path normalisation, the route
   policy, and the login / step-up / 2FA / certificate-problem pages instead of the proxy.

Routes: the gateway's own pages under ``/_gateway/`` (login, step-up, certificate,
logout, logout-everywhere, 2FA "Not now", static CSS), ``/healthz``,
``/.well-known/jwks.json``, and a catch-all that forwards to the upstream through the
injected ``forward`` (gw-proxy's ``proxy_request`` bound to its upstream pool); a
WebSocket upgrade also hands it the guard that closes the socket when its session ends
(``gateway._websocket_guard``).

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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy.exc import OperationalError

from gateway._assertion import ASSERTION_PURPOSE, AssertionSigner, identity_headers
from gateway._auth import (
    apply_session_cookie,
    auth_middleware,
    logout,
    logout_everywhere,
    request_state,
    require_csrf,
    tls_certificate_source,
)
from gateway._errors import GatewayError, StoreUnavailable
from gateway._i18n import load_catalogs
from gateway._identity import CertificateProblem, Identity
from gateway._metrics import GatewayMetrics
from gateway._pages import (
    CATALOGS,
    JINJA,
    LOGIN_OPTIONS,
    LoginOption,
    make_environment,
    page_language,
    render_page,
    safe_next,
)
from gateway._paths import normalise_path
from gateway._policy import Outcome, decide, request_auth, required_for
from gateway._revocation_cache import TrustCache, TrustMaterialLike
from gateway._sessions import Sessions
from gateway._settings import RESERVED_PREFIX, GatewaySettings
from gateway._state import (
    CERTIFICATE_SOURCE,
    CLOCK,
    FACTORY,
    FORWARD,
    METRICS,
    REFRESH_TASK,
    SESSIONS,
    SETTINGS,
    SIGNER,
    TLS_CONTEXT,
    TRUST,
    VERIFIER,
    CertificateSource,
    CurrentVerifier,
    Forwarder,
)
from gateway._tls import set_client_ca_names
from gateway._verification import ChainVerifier
from gateway._websocket_guard import websocket_guard
from store import (
    CAGeneration,
    Clock,
    GenerationStatus,
    Level,
    Sealer,
    make_engine,
    session_factory,
    system_clock,
)

__all__ = ["UPSTREAM_ROUTE", "create_app", "error_middleware", "policy_middleware"]

log = logging.getLogger("gateway")

UPSTREAM_ROUTE = "upstream"
STATIC_DIR = Path(__file__).parent / "static"
HSTS = "max-age=31536000"  # one year; the gateway is HTTPS-only by design
_SIGNER_RELOAD_EVERY = 15  # refresh rounds between re-reads of the assertion keys (~30 s)


# --- middlewares


def _log_path(request: web.Request) -> str:
    """The path for a log line: our own routes with variable parts by their pattern.

    SECURITY: such parts can be secrets (the activation link's token lets its holder set
    the account's password), and logs are read by more people than the store.
    """
    route = request.match_info.route
    resource = route.resource
    if route.name != UPSTREAM_ROUTE and isinstance(resource, web.DynamicResource):
        return resource.canonical
    return request.path


def error_middleware() -> Any:
    """Factory: ``GatewayError`` → its page and status; anything unexpected → a 500 page."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            log.info("%s on %s: %s", type(exc).__name__, _log_path(request), exc.detail)
            return render_page(request, "error.html", {"page": exc.page}, status=exc.status)
        except web.HTTPNotFound:
            return render_page(request, "error.html", {"page": "not_found"}, status=404)
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except OperationalError as exc:
            # The store went away under a handler (the auth middleware maps its own reads
            # to StoreUnavailable; the login pages and session writes do not): fail closed
            # with the same page.
            log.error("store unavailable on %s %s: %s", request.method, _log_path(request), exc)
            page = StoreUnavailable.page
            return render_page(request, "error.html", {"page": page}, status=503)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, _log_path(request))
            return render_page(request, "error.html", {"page": "error"}, status=500)

    return impl


def _format_time(value: datetime | None, language: str) -> str:
    if value is None:
        return ""
    pattern = "%Y-%m-%d %H:%M UTC" if language == "en" else "%d.%m.%Y %H:%M UTC"
    return value.strftime(pattern)


def _certificate_page(
    request: web.Request, problem: CertificateProblem, next_path: str
) -> web.Response:
    language = page_language(request)
    return render_page(
        request,
        "certificate_problem.html",
        {
            "problem": problem,
            "when_since": _format_time(problem.since, language),
            "when_until": _format_time(problem.until, language),
            "next": next_path,
        },
        status=403,
    )


def policy_middleware() -> Any:
    """Factory: decides, for requests bound upstream, whether they pass or get a page."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        if route.name != UPSTREAM_ROUTE:
            return await handler(request)
        app = request.app
        settings = app[SETTINGS]
        state = request_state(request)
        normalised = normalise_path(request.raw_path)  # PathRejected → 400 page
        if normalised.path.lower().startswith(RESERVED_PREFIX.lower()):
            raise web.HTTPNotFound()  # SECURITY: the reserved prefix is never forwarded
        state.path = normalised
        requirement = required_for(
            normalised.path, request.method, settings.routes, settings.default_level
        )
        now = app[CLOCK]()
        decision = decide(
            auth=request_auth(state, now),
            requirement=requirement,
            now=now,
            twofa_deadline=settings.twofa_deadline_at,
        )
        if decision.outcome is Outcome.ALLOW:
            return await handler(request)
        next_path = safe_next(normalised.forward)
        if decision.outcome is Outcome.CERTIFICATE_PROBLEM:
            assert isinstance(state.certificate, CertificateProblem)
            return _certificate_page(request, state.certificate, next_path)
        if decision.outcome is Outcome.LOGIN:
            return render_page(request, "login.html", {"next": next_path}, status=401)
        if decision.outcome is Outcome.TWOFA_PROMPT:
            deadline = settings.twofa_deadline_at
            return render_page(
                request,
                "twofa_prompt.html",
                {"next": next_path, "deadline": _format_time(deadline, page_language(request))},
                status=403,
            )
        return render_page(
            request,
            "step_up.html",
            {"next": next_path, "required": decision.required.value},
            status=403,
        )

    return impl


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # SECURITY: HSTS on every response (pages and proxied), nosniff unless the upstream set it.
    response.headers.setdefault("Strict-Transport-Security", HSTS)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


# --- handlers


async def upstream_handler(request: web.Request) -> web.StreamResponse:
    """Forward to the upstream with our identity headers and the signed assertion; a
    WebSocket goes with its guard (``gateway._websocket_guard``), so it closes when its
    session ends."""
    app = request.app
    state = request_state(request)
    assert state.path is not None  # set by policy_middleware
    headers: dict[str, str] = {}
    if state.identity is not None:
        now = app[CLOCK]()
        headers = identity_headers(state.identity, app[SIGNER].sign(state.identity, now))
    # The normalised target goes as path_qs: cloning the request for it cost more than the
    # rest of this handler.
    response: web.StreamResponse = await app[FORWARD](
        request,
        identity_headers=headers,
        path_qs=state.path.forward,
        websocket_guard=websocket_guard(request),
    )
    return response


async def login_page(request: web.Request) -> web.StreamResponse:
    state = request_state(request)
    next_path = safe_next(request.query.get("next"))
    if isinstance(state.certificate, CertificateProblem) and state.identity is None:
        return _certificate_page(request, state.certificate, next_path)
    if state.identity is not None and state.identity.level.satisfies(Level.BASIC):
        raise web.HTTPSeeOther(next_path)
    return render_page(request, "login.html", {"next": next_path})


async def step_up_page(request: web.Request) -> web.StreamResponse:
    next_path = safe_next(request.query.get("next"))
    required = request.query.get("level", Level.STRONG.value)
    if required not in {level.value for level in Level}:
        required = Level.STRONG.value
    return render_page(request, "step_up.html", {"next": next_path, "required": required})


async def certificate_page(request: web.Request) -> web.StreamResponse:
    state = request_state(request)
    if isinstance(state.certificate, CertificateProblem):
        return _certificate_page(request, state.certificate, "/")
    raise web.HTTPSeeOther("/")


async def logout_handler(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    require_csrf(request, form)
    await logout(request)
    return render_page(request, "logged_out.html")


async def logout_everywhere_handler(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    require_csrf(request, form)
    await logout_everywhere(request)
    return render_page(request, "logged_out.html")


async def twofa_not_now_handler(request: web.Request) -> web.StreamResponse:
    """The policy hook for "Not now": only a basic session before the deadline may skip."""
    form = await request.post()
    require_csrf(request, form)
    app = request.app
    state = request_state(request)
    deadline = app[SETTINGS].twofa_deadline_at
    now = app[CLOCK]()
    next_path = safe_next(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
    if state.session is None or deadline is None or now >= deadline:
        raise web.HTTPSeeOther(f"{RESERVED_PREFIX}/step-up?next={quote(next_path, safe='/')}")
    await asyncio.to_thread(
        app[SESSIONS].update, state.session, now=now, twofa_prompt_dismissed=True
    )
    raise web.HTTPSeeOther(next_path)


async def healthz(request: web.Request) -> web.Response:
    fresh = request.app[TRUST].fresh
    return web.json_response(
        {"status": "ok" if fresh else "store-stale"}, status=200 if fresh else 503
    )


async def crl(request: web.Request) -> web.Response:
    """A generation's current CRL (DER), where certificates' CRL distribution points point.

    Anonymous by design (RFC 5280 §4.2.1.13: relying parties fetch CRLs without
    credentials); the CRL is signed, so the transport needs no trust of its own.
    """
    generation = int(request.match_info["generation"])

    def load() -> str | None:
        with request.app[FACTORY]() as db:
            row = db.get(CAGeneration, generation)
            if row is None or row.status == GenerationStatus.RETIRED:
                return None
            return row.crl_pem

    pem = await asyncio.to_thread(load)
    if pem is None:
        raise web.HTTPNotFound()
    der = x509.load_pem_x509_crl(pem.encode()).public_bytes(serialization.Encoding.DER)
    # Short caching: a revocation re-publishes the CRL at once.
    return web.Response(
        body=der, content_type="application/pkix-crl", headers={"Cache-Control": "max-age=300"}
    )


async def jwks(request: web.Request) -> web.Response:
    response = web.json_response(request.app[SIGNER].jwks())
    response.headers["Cache-Control"] = "public, max-age=60"
    return response


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
        engine = make_engine(store_url)
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
                    loop.call_soon_threadsafe(set_client_ca_names, tls_context, issuers)

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
        tls_context: the listener's context from ``gateway._tls.create_server_context``;
            when given, its CA names follow CA rotations and retirements.
        metrics: gw-proxy's ``GatewayMetrics``; handshakes and logins are counted into it.
        trust_loader: ``ca.load_trust_material``.
        extensions: ``setup(app)`` callables that add routes (before the catch-all).
        template_dirs: extra template folders searched before ``gateway/templates``.
        max_staleness: see ``gateway._revocation_cache``; must stay below 5 s.
    """
    if max_staleness >= timedelta(seconds=5):
        raise ValueError("max_staleness must be below 5s (revocation within 5s)")
    app = web.Application(
        middlewares=[error_middleware(), auth_middleware(), policy_middleware()],
        client_max_size=1024 * 1024,  # our own forms; proxied bodies are streamed, not read
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[FORWARD] = forward
    app[CERTIFICATE_SOURCE] = certificate_source
    app[TLS_CONTEXT] = tls_context
    app[VERIFIER] = CurrentVerifier()
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
    app.on_response_prepare.append(_security_headers)

    router = app.router
    router.add_get("/healthz", healthz, name="healthz")
    router.add_get("/.well-known/jwks.json", jwks, name="jwks")
    router.add_get(f"{RESERVED_PREFIX}/crl/{{generation:[0-9]{{1,6}}}}.crl", crl, name="crl")
    router.add_static(
        f"{RESERVED_PREFIX}/static/", STATIC_DIR, append_version=False, name="gateway_static"
    )
    router.add_get(f"{RESERVED_PREFIX}/login", login_page)
    router.add_get(f"{RESERVED_PREFIX}/step-up", step_up_page)
    router.add_get(f"{RESERVED_PREFIX}/certificate", certificate_page)
    router.add_post(f"{RESERVED_PREFIX}/logout", logout_handler)
    router.add_post(f"{RESERVED_PREFIX}/logout-everywhere", logout_everywhere_handler)
    router.add_post(f"{RESERVED_PREFIX}/2fa/not-now", twofa_not_now_handler)
    for extend in extensions:
        extend(app)
    # Last: aiohttp matches in registration order.
    router.add_route("*", "/{tail:.*}", upstream_handler, name=UPSTREAM_ROUTE)
    return app


def identity_of(request: web.Request) -> Identity | None:
    """Who is logged in on this request (None: nobody)."""
    return request_state(request).identity
