"""Who is there: the certificate, the session, single sign-on, and the login API for pages.

:func:`auth_middleware` runs on every request (except static files, ``/healthz`` and the
JWKS) and fills ``request[REQUEST_STATE]`` (:class:`gateway._state.RequestState`):

1. The client certificate (``CERTIFICATE_SOURCE``: the TLS connection in direct mode) is
   evaluated on *every* request from the trust cache — no store query for a known
   certificate, and TLS session resumption changes nothing since the check is here.
2. The session cookie is resolved (cached; see ``gateway.auth._sessions``). A session bound to
   a certificate ends when that certificate is not presented, or no longer valid.
3. Single sign-on: a valid certificate with no session (or another user's, or a lower
   level) starts/rotates to a ``strong`` session bound to its fingerprint, without any
   page. With ``certificate_requires_password`` the certificate only raises a *password*
   session of the same user to ``strong`` (second factor); alone it logs nobody in.

In direct TLS mode a request bound upstream first asks its connection's decision memo
(``gateway.auth._decision_memo``, issue 11): a plain allow made on an earlier request of the
connection, still valid, fills the state without steps 1 to 3 (and the policy middleware lets
the request pass); otherwise the request is decided as above and the policy middleware
remembers its allow.

The API for the login pages (the logins helper)::

    state = request_state(request)            # .identity, .session, .certificate
    await complete_login(request, user_id=17, level=Level.BASIC, method="password")
    #   starts or rotates the session (new id on every level change), sets the cookie on
    #   the response this request returns, records the login metric; with
    #   certificate_requires_password and a valid certificate of the same user presented,
    #   a password login becomes strong (method "certificate").
    await logout(request); await logout_everywhere(request)
    require_csrf(request, form)               # raises CsrfRejected
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway._errors import CsrfRejected, LoginRefused, StoreUnavailable
from gateway._state import CLOCK, FACTORY, METRICS, SETTINGS, UPSTREAM_ROUTE
from gateway.auth._certificate_identity import (
    CERTIFICATE_METHOD,
    CertificateProblem,
    Identity,
    ProblemKind,
    UserRecord,
    evaluate_certificate,
    handshake_result,
)
from gateway.auth._decision_memo import (
    DECISION_MEMO,
    MEMO_BASIS,
    REUSED_HEADERS,
    DecisionMemos,
    MemoBasis,
)
from gateway.auth._forward_auth import (
    OriginalRequest,
    decision_request,
    front_found_the_store_unavailable,
)
from gateway.auth._presented import CLIENT_CERTIFICATE_DER_LIMIT
from gateway.auth._request_state import (
    CERTIFICATE_SOURCE,
    PAGE_CSRF,
    PAGE_LANGUAGE_HINT,
    PRESENTED,
    REQUEST_STATE,
    SESSIONS,
    TRUST,
    VERIFIER,
    RequestState,
)
from gateway.auth._resolution import (
    PASSWORD_METHOD,
    SignOn,
    resolve_request,
)
from gateway.auth._sessions import (
    CookieLookup,
    NewSession,
    SessionState,
    csrf_ok,
    session_cookie_header,
    touch_interval_for,
)
from gateway.auth._trust_cache import MISS, CacheEntry
from gateway.logins import (
    METHOD_CERTIFICATE,
    certificate_sign_on_is_a_login,
    record_login,
    revoke_devices,
)
from gateway.tls._context import peer_certificate_der
from gateway.tls._trusted_peers import client_address
from store import Level, User, UserStatus, transaction

__all__ = [
    "ORIGINAL_REQUEST",
    "auth_middleware",
    "complete_login",
    "evaluate_presented",
    "expected_origin",
    "identity_from_session",
    "logout",
    "logout_everywhere",
    "origin_verdict",
    "request_state",
    "require_csrf",
    "tls_certificate_source",
    "user_record",
]

log = logging.getLogger("gateway.auth")

ORIGINAL_REQUEST = web.RequestKey("gateway.original_request", OriginalRequest)
"""Forward-auth mode: the request the front proxy asks about (set on ``/_gateway/auth``)."""

# Routes (by name) that need no identity: health, public keys, static files.
UNAUTHENTICATED_ROUTES = frozenset({"healthz", "jwks", "crl", "gateway_static"})


def tls_certificate_source(request: web.Request) -> bytes | None:
    """Direct mode: the certificate of this request's TLS connection (read once per
    connection, by the app's ``PresentedCertificates``: it cannot change within one, also
    not after resumption)."""
    transport = request.transport
    if transport is None:
        return None
    connection = transport.get_extra_info("ssl_object")
    if connection is None:
        return None
    return request.app[PRESENTED].connection_der(connection, peer_certificate_der)


def request_state(request: web.Request) -> RequestState:
    state = request.get(REQUEST_STATE)
    if not isinstance(state, RequestState):
        raise RuntimeError("auth_middleware has not run for this request")
    return state


def _store_failure(exc: Exception) -> StoreUnavailable:
    log.error("store unavailable: %s", exc)
    return StoreUnavailable(str(exc))


async def evaluate_presented(request: web.Request, der: bytes) -> Identity | CertificateProblem:
    """What the certificate ``der`` means now (trust cache; one store read on a miss).

    Raises:
        StoreUnavailable: the store was needed and could not be read.
    """
    app = request.app
    if len(der) > CLIENT_CERTIFICATE_DER_LIMIT:
        return CertificateProblem(
            kind=ProblemKind.INVALID,
            fingerprint=hashlib.sha256(der).hexdigest(),
            detail=f"oversized: {len(der)} bytes, more than {CLIENT_CERTIFICATE_DER_LIMIT}",
        )
    try:
        parsed = app[PRESENTED].parse(der)
    except ValueError:
        return CertificateProblem(
            kind=ProblemKind.INVALID,
            fingerprint=hashlib.sha256(der).hexdigest(),
            detail="unparsable",
        )
    fingerprint = parsed.fingerprint
    trust = app[TRUST]
    entry = trust.get(fingerprint)
    if not isinstance(entry, CacheEntry):
        try:
            entry = await asyncio.to_thread(trust.load, fingerprint)
        except Exception as exc:
            raise _store_failure(exc) from exc
    verifier = app[VERIFIER].verifier
    if verifier is None:
        raise StoreUnavailable("no trust material loaded (is the CA initialised?)")
    return evaluate_certificate(
        certificate=parsed.certificate,
        facts=parsed.facts,
        fingerprint=fingerprint,
        record=entry.record,
        user=entry.user,
        retired_generations=trust.retired_generations,
        verify_chain=verifier.verify,
        now=app[CLOCK](),
    )


async def user_record(request: web.Request, user_id: int) -> UserRecord | None:
    """The user (trust cache; one store read on a miss); None if there is none.

    Raises:
        StoreUnavailable: the store was needed and could not be read.
    """
    trust = request.app[TRUST]
    found = trust.user(user_id)
    if found is MISS:
        try:
            return await asyncio.to_thread(trust.load_user, user_id)
        except Exception as exc:
            raise _store_failure(exc) from exc
    assert found is None or isinstance(found, UserRecord)
    return found


def identity_from_session(
    session: SessionState, user: UserRecord, certificate: Identity | CertificateProblem | None
) -> Identity:
    bound = (
        isinstance(certificate, Identity)
        and certificate.cert_fingerprint == session.cert_fingerprint
    )
    return Identity(
        user_id=user.id,
        broker_number=user.broker_number,
        email=user.email,
        name=user.name,
        locale=user.locale,
        level=session.level,
        method=session.method or PASSWORD_METHOD,
        cert_serial=certificate.cert_serial
        if bound and isinstance(certificate, Identity)
        else None,
        cert_not_after=(
            certificate.cert_not_after if bound and isinstance(certificate, Identity) else None
        ),
        cert_fingerprint=session.cert_fingerprint if bound else None,
        # SECURITY: a restricted session (broker number only) has not proven which of the
        # firm's people is there: the portal learns the firm, no role and no rights.
        firm=(
            user.firm.firm_level()
            if user.firm is not None and session.level is Level.RESTRICTED
            else user.firm
        ),
    )


async def _read_session(request: web.Request, cookie: str | None, now: datetime) -> CookieLookup:
    if not cookie:
        return CookieLookup(session=None)
    sessions = request.app[SESSIONS]
    session = sessions.peek(cookie, now)
    if session is not None:
        return CookieLookup(session=session)
    try:
        # An unknown or ended cookie is ignored, not deleted: right after a rotation,
        # parallel requests still carry the old cookie, and deleting it could overwrite the
        # new one. (So the login page keeps saying "logged out for inactivity" until the
        # next login or logout replaces the cookie.)
        return await asyncio.to_thread(sessions.lookup, cookie, now)
    except Exception as exc:
        raise _store_failure(exc) from exc


async def _resolve(request: web.Request, path: str) -> RequestState:
    """Read, decide (``resolve_request``, pure), then write: the request's state.

    ``path`` is the path the decision is about: the request's own, or in forward-auth mode
    the original request's (``gateway.auth._forward_auth``).
    """
    app = request.app
    settings = app[SETTINGS]
    sessions = app[SESSIONS]
    metrics = app.get(METRICS)
    now = app[CLOCK]()
    state = RequestState()

    # --- read
    der = app[CERTIFICATE_SOURCE](request)
    if der:
        state.certificate = await evaluate_presented(request, der)
    connection = request.transport.get_extra_info("ssl_object") if request.transport else None
    if metrics is not None and (connection is None or app[PRESENTED].first_request_on(connection)):
        metrics.record_handshake(handshake_result(state.certificate))
    cert = state.certificate if isinstance(state.certificate, Identity) else None
    looked_up = await _read_session(request, request.cookies.get(settings.session_cookie_name), now)
    session = looked_up.session
    session_user: UserRecord | None = None
    if session is not None and session.user_id is not None:
        session_user = await user_record(request, session.user_id)
    reusable: NewSession | None = None
    own = (
        session is not None
        and cert is not None
        and (session.user_id == cert.user_id and session.cert_fingerprint == cert.cert_fingerprint)
    )
    if cert is not None and cert.cert_fingerprint is not None and not own:
        # Only a request without the certificate's own session can reuse one (a client
        # without cookies): the steady state (a browser's cookie) skips this lookup.
        reusable = sessions.certificate_session(cert.cert_fingerprint, cert.user_id, now)

    # --- decide
    resolution = resolve_request(
        certificate=state.certificate,
        session=session,
        session_user=session_user,
        certificate_session=reusable.state if reusable is not None else None,
        path=path,
        now=now,
        idle_timeout=settings.idle_timeout,
        touch_interval=touch_interval_for(settings.idle_timeout),
        inactivity_exempt_paths=settings.inactivity_exempt_paths,
        certificate_requires_password=settings.certificate_requires_password,
    )

    # --- write
    if resolution.end is not None and resolution.idle_logout:
        await asyncio.to_thread(sessions.end_idle, resolution.end, now)
    elif resolution.end is not None:
        await asyncio.to_thread(sessions.end, resolution.end.id, now)
    state.clear_cookie = resolution.clear_cookie
    state.refusal = resolution.refusal
    if isinstance(state.certificate, CertificateProblem) and state.certificate.refusal:
        state.refusal = state.certificate.refusal
    kept = resolution.session
    if resolution.sign_on is SignOn.REUSE and reusable is not None:
        state.new_cookie = reusable.cookie  # a client without cookies: its session again
    elif resolution.sign_on in (SignOn.START, SignOn.ELEVATE):
        assert cert is not None and cert.cert_fingerprint is not None
        new = await asyncio.to_thread(
            _certificate_sign_on,
            app,
            elevate=kept if resolution.sign_on is SignOn.ELEVATE else None,
            user_id=cert.user_id,
            fingerprint=cert.cert_fingerprint,
            client_addr=client_address(request, settings.trusted_networks),
            now=now,
        )
        kept, state.new_cookie = new.state, new.cookie
        if metrics is not None:
            metrics.record_login(CERTIFICATE_METHOD, "success")
    if resolution.touch and kept is not None:
        kept = await asyncio.to_thread(sessions.touch, kept, now)

    user: UserRecord | None = None
    if kept is not None and resolution.user_from_certificate and cert is not None:
        user = UserRecord(
            id=cert.user_id,
            email=cert.email,
            name=cert.name,
            locale=cert.locale,
            status=UserStatus.ACTIVE,
            broker_number=cert.broker_number,
            firm=cert.firm,
        )
    elif kept is not None:
        user = session_user  # the cookie's session survived: its own user
    state.session = kept
    if kept is not None and user is not None and kept.level is not Level.ANONYMOUS:
        state.identity = identity_from_session(kept, user, state.certificate)
    if state.identity is None:
        state.idle_logout = looked_up.idle_logout or resolution.idle_logout
    if kept is not None:
        request[PAGE_CSRF] = kept.csrf_token
    if user is not None:
        request[PAGE_LANGUAGE_HINT] = user.locale
    return state


def _certificate_sign_on(
    app: web.Application,
    *,
    elevate: SessionState | None,
    user_id: int,
    fingerprint: str,
    client_addr: str | None,
    now: datetime,
) -> NewSession:
    """Start (``elevate`` None) or elevate the certificate's strong session (blocking).

    The login history (``gateway.logins.certificate_sign_on_is_a_login``) is written in
    the same transaction: a session without its login, or the reverse, is never stored.
    Only here, when a session is made; the requests on it write nothing (issue 14).
    """
    sessions = app[SESSIONS]
    with transaction(app[FACTORY]) as db:
        if elevate is not None:
            new = sessions.elevate(
                elevate,
                level=Level.STRONG,
                method=CERTIFICATE_METHOD,
                now=now,
                cert_fingerprint=fingerprint,
                db=db,
            )
        else:
            new = sessions.start(
                user_id=user_id,
                level=Level.STRONG,
                method=CERTIFICATE_METHOD,
                now=now,
                cert_fingerprint=fingerprint,
                client_addr=client_addr,
                db=db,
            )
        if certificate_sign_on_is_a_login(elevate.level if elevate is not None else None):
            user = db.get(User, user_id)
            if user is not None:
                record_login(user, METHOD_CERTIFICATE, now)
    return new


def auth_middleware() -> Any:
    """Middleware factory: fills ``request[REQUEST_STATE]``; cookies are set on prepare."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        # By the route aiohttp matched, not by path prefix: "/healthzX" is not /healthz.
        resource = request.match_info.route.resource
        if resource is not None and resource.name in UNAUTHENTICATED_ROUTES:
            return await handler(request)
        memos = request.app.get(DECISION_MEMO)
        if memos is not None and resource is not None and resource.name == UPSTREAM_ROUTE:
            if _reuse_allow(request, memos):
                return await handler(request)
        path = request.path
        original = decision_request(request, request.app[SETTINGS])
        if original is not None:
            request[ORIGINAL_REQUEST] = original
            path = original.raw_path
            if front_found_the_store_unavailable(request, request.app[SETTINGS]):
                # the first decision waited on the store already; do not wait again
                raise StoreUnavailable("the front's decision found the store unavailable")
        request[REQUEST_STATE] = await _resolve(request, path)
        return await handler(request)

    return impl


def _reuse_allow(request: web.Request, memos: DecisionMemos) -> bool:
    """Direct mode, a request bound upstream: fill its state from this connection's memo
    (``gateway.auth._decision_memo``) and return True; or note the memo's basis for the
    policy middleware (which remembers an allow) and return False: decide afresh."""
    transport = request.transport
    connection = transport.get_extra_info("ssl_object") if transport is not None else None
    if connection is None:
        return False
    app = request.app
    route_class = memos.route_class(request.raw_path, request.method, app[SETTINGS])
    if route_class is None:
        return False  # decided afresh: the policy middleware answers with its own page
    normalised, requirement = route_class
    cookie = request.headers.get("Cookie", "")  # what request.cookies parses, as sent
    trust = app[TRUST]
    memo = memos.reuse(
        connection, cookie, requirement, now=app[CLOCK](), trust=trust, sessions=app[SESSIONS]
    )
    if memo is None:
        # SECURITY: read before the decision reads the trust cache, so a change during it
        # leaves the remembered entry already out of date.
        request[MEMO_BASIS] = MemoBasis(
            connection=connection,
            cookie=cookie,
            requirement=requirement,
            trust_generation=trust.generation,
        )
        return False
    request[REQUEST_STATE] = RequestState(
        certificate=memo.certificate,
        session=memo.session,
        identity=memo.identity,
        path=normalised,
    )
    request[PAGE_CSRF] = memo.session.csrf_token
    request[PAGE_LANGUAGE_HINT] = memo.identity.locale
    request[REUSED_HEADERS] = dict(memo.headers)
    return True


async def apply_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: set or clear the session cookie before headers go out.

    Done on prepare, not after the handler, because proxied responses are streamed and
    their headers are sent before the handler returns.
    """
    state = request.get(REQUEST_STATE)
    if not isinstance(state, RequestState):
        return
    name = request.app[SETTINGS].session_cookie_name
    # aiohttp renders response.cookies before this hook runs: add the header itself.
    if state.new_cookie:
        response.headers.add("Set-Cookie", session_cookie_header(name, state.new_cookie))
    elif state.clear_cookie:
        response.headers.add("Set-Cookie", session_cookie_header(name, None))


async def complete_login(
    request: web.Request,
    *,
    user_id: int,
    level: Level,
    method: str,
    data: Mapping[str, Any] | None = None,
) -> SessionState:
    """Log ``user_id`` in at ``level`` (a factor was just checked): new session id, cookie set.

    With ``certificate_requires_password``, a ``password`` login on a connection that
    presents a valid certificate of the same user becomes ``strong`` (method
    ``certificate``): the certificate is the second factor.

    Raises:
        LoginRefused: the user may not log in (``ca.login_refusal``, issue 13).
    """
    app = request.app
    settings = app[SETTINGS]
    sessions = app[SESSIONS]
    now = app[CLOCK]()
    state = request_state(request)
    # SECURITY (issue 13): whatever the factor, one last look at the user as the store has
    # it now (the services checked too; a deactivation between password and second factor
    # lands here). A fresh read, also refreshing this replica's cached copy.
    try:
        record = await asyncio.to_thread(app[TRUST].load_user, user_id)
    except Exception as exc:
        raise _store_failure(exc) from exc
    if record is not None and record.refusal is not None:
        raise LoginRefused(record.refusal, user_id=user_id)
    cert = state.certificate if isinstance(state.certificate, Identity) else None
    fingerprint = None
    if (
        settings.certificate_requires_password
        and method == PASSWORD_METHOD
        and cert is not None
        and cert.user_id == user_id
    ):
        level, method, fingerprint = Level.STRONG, CERTIFICATE_METHOD, cert.cert_fingerprint
    current = state.session
    if current is not None and current.user_id in (None, user_id):
        new = await asyncio.to_thread(
            sessions.elevate,
            current,
            level=level,
            method=method,
            now=now,
            user_id=user_id,
            cert_fingerprint=fingerprint,
        )
        if data:
            new_state = await asyncio.to_thread(
                sessions.update, new.state, now=now, data={**new.state.data, **data}
            )
        else:
            new_state = new.state
    else:
        if current is not None:
            await asyncio.to_thread(sessions.end, current.id, now)
        new = await asyncio.to_thread(
            sessions.start,
            user_id=user_id,
            level=level,
            method=method,
            now=now,
            cert_fingerprint=fingerprint,
            client_addr=client_address(request, settings.trusted_networks),
            data=data,
        )
        new_state = new.state
    state.session = new_state
    state.new_cookie = new.cookie
    state.clear_cookie = False
    request[PAGE_CSRF] = new_state.csrf_token
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.record_login(method, "success")
    return new_state


async def logout(request: web.Request) -> None:
    state = request_state(request)
    if state.session is not None:
        await asyncio.to_thread(request.app[SESSIONS].end, state.session.id, request.app[CLOCK]())
    state.session, state.identity, state.new_cookie, state.clear_cookie = None, None, None, True


async def logout_everywhere(request: web.Request, *, forget_devices: bool = False) -> int:
    """End every session of the user; with ``forget_devices`` also forget their remembered
    browsers, in the same transaction (issue 14: "Überall abmelden" offers both). Returns
    how many sessions ended."""
    state = request_state(request)
    # SECURITY: a restricted session needs only the broker number, so it is not proven to
    # be this user; it may end itself, not every session of the user.
    if (
        state.session is None
        or state.session.user_id is None
        or not state.session.level.satisfies(Level.BASIC)
    ):
        await logout(request)
        return 0
    user_id, now = state.session.user_id, request.app[CLOCK]()
    sessions, factory = request.app[SESSIONS], request.app[FACTORY]

    def end_all() -> int:
        with transaction(factory) as db:
            if forget_devices:
                revoke_devices(db, user_id=user_id, actor=f"user:{user_id}", now=now)
            return sessions.end_all_for_user(user_id, now, db=db)

    count = await asyncio.to_thread(end_all)
    state.session, state.identity, state.new_cookie, state.clear_cookie = None, None, None, True
    return count


def expected_origin(public_url: str) -> str:
    """The origin (RFC 6454: ``scheme://host[:port]``, lower case, default port left out)
    of ``gateway.public_url``: the only one our forms are posted from."""
    return _origin_of(public_url) or ""


def _origin_of(url: str) -> str | None:
    """The serialised origin of an absolute http(s) URL; None for anything else
    (``null``, a relative or broken URL)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in ("http", "https") or not host:
        return None
    default = 443 if scheme == "https" else 80
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def origin_verdict(origin: str | None, referer: str | None, expected: str) -> bool | None:
    """OWASP's second line against CSRF ("verifying origin with standard headers"), pure.

    Returns:
        True/False: the ``Origin`` header (when sent), else the ``Referer``'s origin, is /
        is not ``expected``; ``Origin: null`` (sandboxed frames, privacy redirects) is not.
        None: neither header was sent (old clients, privacy proxies that strip both): the
        token alone decides (docs/gateway.md "CSRF").
    """
    if origin is not None:
        return _origin_of(origin) == expected
    if referer is not None:
        return _origin_of(referer) == expected
    return None


def require_csrf(request: web.Request, form: Mapping[str, Any]) -> None:
    """Raise :class:`CsrfRejected` unless ``form["csrf"]`` is the session's token and the
    request's Origin (else Referer), when sent, is ``gateway.public_url``'s origin."""
    session = request_state(request).session
    token = form.get("csrf")
    if session is None or not csrf_ok(session, token if isinstance(token, str) else None):
        raise CsrfRejected("missing or wrong CSRF token")
    expected = expected_origin(request.app[SETTINGS].public_url)
    origin, referer = request.headers.get("Origin"), request.headers.get("Referer")
    if origin_verdict(origin, referer, expected) is False:
        # SECURITY: a valid token from another origin (a leaked token, a sibling
        # subdomain's page) is still refused.
        seen = "Origin" if origin is not None else "Referer"
        raise CsrfRejected(f"{seen} is not {expected}")
