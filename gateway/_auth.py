"""Who is there: the certificate, the session, single sign-on, and the login API for pages.

:func:`auth_middleware` runs on every request (except static files, ``/healthz`` and the
JWKS) and fills ``request[REQUEST_STATE]`` (:class:`gateway._state.RequestState`):

1. The client certificate (``CERTIFICATE_SOURCE``: the TLS connection in direct mode) is
   evaluated on *every* request from the trust cache — no store query for a known
   certificate, and TLS session resumption changes nothing since the check is here.
2. The session cookie is resolved (cached; see ``gateway._sessions``). A session bound to
   a certificate ends when that certificate is not presented, or no longer valid.
3. Single sign-on: a valid certificate with no session (or another user's, or a lower
   level) starts/rotates to a ``strong`` session bound to its fingerprint, without any
   page. With ``certificate_requires_password`` the certificate only raises a *password*
   session of the same user to ``strong`` (second factor); alone it logs nobody in.

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
import weakref
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509

from gateway._errors import CsrfRejected, StoreUnavailable
from gateway._identity import (
    CERTIFICATE_METHOD,
    CertificateProblem,
    Identity,
    ProblemKind,
    UserRecord,
    evaluate_certificate,
    handshake_result,
)
from gateway._pages import PAGE_CSRF, PAGE_LANGUAGE_HINT
from gateway._revocation_cache import MISS, CacheEntry
from gateway._sessions import (
    TOUCH_INTERVAL,
    SessionState,
    SessionVerdict,
    csrf_ok,
    session_cookie_header,
    session_verdict,
)
from gateway._state import (
    CERTIFICATE_SOURCE,
    CLOCK,
    METRICS,
    REQUEST_STATE,
    SESSIONS,
    SETTINGS,
    TRUST,
    VERIFIER,
    RequestState,
)
from gateway._tls import peer_certificate_der
from gateway._trusted import client_address
from store import Level, UserStatus

__all__ = [
    "auth_middleware",
    "complete_login",
    "evaluate_presented",
    "identity_from_session",
    "is_inactivity_exempt",
    "logout",
    "logout_everywhere",
    "request_state",
    "require_csrf",
    "tls_certificate_source",
    "user_record",
]

log = logging.getLogger("gateway.auth")

# Routes (by name) that need no identity: health, public keys, static files.
UNAUTHENTICATED_ROUTES = frozenset({"healthz", "jwks", "crl", "gateway_static"})
_PASSWORD_METHOD = "password"
# Connections already counted in brokergate_handshakes (one count per TLS connection).
_COUNTED: weakref.WeakSet[Any] = weakref.WeakSet()
_CONNECTION_CERT: weakref.WeakKeyDictionary[Any, bytes | None] = weakref.WeakKeyDictionary()
# fingerprint → (DER, parsed certificate): each certificate is parsed once, however many
# connections present it (a browser opens several).
_PARSED: dict[str, tuple[bytes, x509.Certificate]] = {}
_PARSED_LIMIT = 20_000
# id(DER bytes of a connection) → fingerprint, so a connection's requests skip the hash.
# Safe against id reuse: a hit counts only if the DER cached for that fingerprint has the
# same bytes (a cheap comparison), so a recycled id can never borrow another's fingerprint.
_FINGERPRINTS: dict[int, str] = {}


def _der_key(der: bytes) -> str:
    return _FINGERPRINTS.get(id(der), "")


def tls_certificate_source(request: web.Request) -> bytes | None:
    """Direct mode: the certificate of this request's TLS connection (read once per
    connection: it cannot change within one, also not after resumption)."""
    transport = request.transport
    if transport is None:
        return None
    connection = transport.get_extra_info("ssl_object")
    if connection is None:
        return None
    try:
        return _CONNECTION_CERT[connection]
    except KeyError:
        der = peer_certificate_der(connection)
        _CONNECTION_CERT[connection] = der
        return der
    except TypeError:  # not weak-referenceable: no caching
        return peer_certificate_der(connection)


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
    # The same bytes object comes back for every request of a connection: hash it once.
    fingerprint = _FINGERPRINTS.get(id(der), "")
    parsed = _PARSED.get(fingerprint)
    if parsed is None or (parsed[0] is not der and parsed[0] != der):
        fingerprint = hashlib.sha256(der).hexdigest()
        parsed = _PARSED.get(fingerprint)
        if parsed is None:
            try:
                certificate = x509.load_der_x509_certificate(der)
            except ValueError:
                return CertificateProblem(
                    kind=ProblemKind.INVALID, fingerprint=fingerprint, detail="unparsable"
                )
            if len(_PARSED) >= _PARSED_LIMIT:
                _PARSED.clear()
            parsed = _PARSED[fingerprint] = (der, certificate)
        if len(_FINGERPRINTS) >= _PARSED_LIMIT:  # one entry per connection: keep it bounded
            _FINGERPRINTS.clear()
        _FINGERPRINTS[id(der)] = fingerprint
    certificate = parsed[1]
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
        certificate=certificate,
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
        method=session.method or _PASSWORD_METHOD,
        cert_serial=certificate.cert_serial
        if bound and isinstance(certificate, Identity)
        else None,
        cert_not_after=(
            certificate.cert_not_after if bound and isinstance(certificate, Identity) else None
        ),
        cert_fingerprint=session.cert_fingerprint if bound else None,
    )


def is_inactivity_exempt(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether requests to ``path`` must not count as activity (``inactivity_exempt_paths``)."""
    return any(path.startswith(p) for p in prefixes)


async def _resolve(request: web.Request) -> RequestState:
    app = request.app
    settings = app[SETTINGS]
    sessions = app[SESSIONS]
    metrics = app.get(METRICS)
    now = app[CLOCK]()
    state = RequestState()

    der = app[CERTIFICATE_SOURCE](request)
    if der:
        state.certificate = await evaluate_presented(request, der)
    connection = request.transport.get_extra_info("ssl_object") if request.transport else None
    if metrics is not None and (connection is None or connection not in _COUNTED):
        if connection is not None:
            _COUNTED.add(connection)
        metrics.record_handshake(handshake_result(state.certificate))

    cert_identity = state.certificate if isinstance(state.certificate, Identity) else None
    cookie = request.cookies.get(settings.session_cookie_name)
    session: SessionState | None = None
    if cookie:
        session = sessions.peek(cookie, now)
        if session is None:
            try:
                session = await asyncio.to_thread(sessions.load, cookie, now)
            except Exception as exc:
                raise _store_failure(exc) from exc
        # An unknown or ended cookie is ignored, not deleted: right after a rotation, parallel
        # requests still carry the old cookie, and deleting it could overwrite the new one.
    if session is not None:
        presented = (
            cert_identity.cert_fingerprint
            if cert_identity is not None and cert_identity.user_id == session.user_id
            else None
        )
        verdict = session_verdict(
            session, now=now, idle_timeout=settings.idle_timeout, presented_fingerprint=presented
        )
        if verdict is not SessionVerdict.ACTIVE:
            # SECURITY: a certificate session whose certificate is gone or no longer valid
            # (revoked!) ends here, on the very next request.
            await asyncio.to_thread(sessions.end, session.id, now)
            session, state.clear_cookie = None, True

    user: UserRecord | None = None
    if session is not None and session.user_id is not None:
        user = await user_record(request, session.user_id)
        if user is None or user.status is not UserStatus.ACTIVE:
            await asyncio.to_thread(sessions.end, session.id, now)
            session, user, state.clear_cookie = None, None, True

    if cert_identity is not None:
        session = await _single_sign_on(request, state, session, cert_identity, now)
        if session is not None and session.user_id == cert_identity.user_id:
            user = UserRecord(
                id=cert_identity.user_id,
                email=cert_identity.email,
                name=cert_identity.name,
                locale=cert_identity.locale,
                status=UserStatus.ACTIVE,
                broker_number=cert_identity.broker_number,
            )

    exempt = is_inactivity_exempt(request.path, settings.inactivity_exempt_paths)
    if session is not None and not exempt:
        if now - session.last_seen_at >= TOUCH_INTERVAL:
            session = await asyncio.to_thread(sessions.touch, session, now)
    state.session = session
    if session is not None and user is not None and session.level is not Level.ANONYMOUS:
        state.identity = identity_from_session(session, user, state.certificate)
    if session is not None:
        request[PAGE_CSRF] = session.csrf_token
    if user is not None:
        request[PAGE_LANGUAGE_HINT] = user.locale
    return state


async def _single_sign_on(
    request: web.Request,
    state: RequestState,
    session: SessionState | None,
    cert: Identity,
    now: Any,
) -> SessionState | None:
    app = request.app
    settings = app[SETTINGS]
    sessions = app[SESSIONS]
    metrics = app.get(METRICS)
    same_user = session is not None and session.user_id == cert.user_id
    if session is not None and same_user and session.cert_fingerprint == cert.cert_fingerprint:
        return session  # already the certificate's session
    if settings.certificate_requires_password:
        if (
            session is not None
            and same_user
            and session.level is Level.BASIC
            and session.method == _PASSWORD_METHOD
        ):
            new = await asyncio.to_thread(
                sessions.elevate,
                session,
                level=Level.STRONG,
                method=CERTIFICATE_METHOD,
                now=now,
                cert_fingerprint=cert.cert_fingerprint,
            )
            state.new_cookie = new.cookie
            if metrics is not None:
                metrics.record_login(CERTIFICATE_METHOD, "success")
            return new.state
        return session
    if session is not None and same_user and session.level is Level.STRONG:
        return session  # strong by TOTP/passkey already; keep it
    if session is not None and same_user:
        new = await asyncio.to_thread(
            sessions.elevate,
            session,
            level=Level.STRONG,
            method=CERTIFICATE_METHOD,
            now=now,
            cert_fingerprint=cert.cert_fingerprint,
        )
    else:
        if session is not None:
            # SECURITY: another user's session on a connection presenting this certificate.
            await asyncio.to_thread(sessions.end, session.id, now)
        assert cert.cert_fingerprint is not None
        reused = sessions.certificate_session(cert.cert_fingerprint, cert.user_id, now)
        if reused is not None:
            # A client without cookies (curl, API, load test): its certificate session again.
            state.new_cookie = reused.cookie
            state.clear_cookie = False
            return reused.state
        new = await asyncio.to_thread(
            sessions.start,
            user_id=cert.user_id,
            level=Level.STRONG,
            method=CERTIFICATE_METHOD,
            now=now,
            cert_fingerprint=cert.cert_fingerprint,
            client_addr=client_address(request, settings.trusted_proxies),
        )
    state.new_cookie = new.cookie
    state.clear_cookie = False
    if metrics is not None:
        metrics.record_login(CERTIFICATE_METHOD, "success")
    return new.state


def auth_middleware() -> Any:
    """Middleware factory: fills ``request[REQUEST_STATE]``; cookies are set on prepare."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        # By the route aiohttp matched, not by path prefix: "/healthzX" is not /healthz.
        resource = request.match_info.route.resource
        if resource is not None and resource.name in UNAUTHENTICATED_ROUTES:
            return await handler(request)
        request[REQUEST_STATE] = await _resolve(request)
        return await handler(request)

    return impl


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
    """
    app = request.app
    settings = app[SETTINGS]
    sessions = app[SESSIONS]
    now = app[CLOCK]()
    state = request_state(request)
    cert = state.certificate if isinstance(state.certificate, Identity) else None
    fingerprint = None
    if (
        settings.certificate_requires_password
        and method == _PASSWORD_METHOD
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
            client_addr=client_address(request, settings.trusted_proxies),
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


async def logout_everywhere(request: web.Request) -> int:
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
    count = await asyncio.to_thread(
        request.app[SESSIONS].end_all_for_user, state.session.user_id, request.app[CLOCK]()
    )
    state.session, state.identity, state.new_cookie, state.clear_cookie = None, None, None, True
    return count


def require_csrf(request: web.Request, form: Mapping[str, Any]) -> None:
    """Raise :class:`CsrfRejected` unless ``form["csrf"]`` is the session's token."""
    session = request_state(request).session
    token = form.get("csrf")
    if session is None or not csrf_ok(session, token if isinstance(token, str) else None):
        raise CsrfRejected("missing or wrong CSRF token")
