"""The login and account pages: wiring into the gateway app, and what every handler shares.

``create_app(..., extensions=[setup_logins(settings=..., secret_key=..., ca_settings=...)])``
adds the routes under ``/_gateway/`` (before the catch-all), the login options of the
login page, a middleware that shows the certificate-expiry banner on the gateway's pages,
and the services' state under ``app[LOGINS]``.

Handlers run the blocking services in threads (``asyncio.to_thread``) and use the core's
session API (``complete_login``, ``require_csrf``, ``render_page``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy
from sqlalchemy.orm import Session, sessionmaker

from ca import FirmSettings, SignerClient
from gateway._errors import BodyTooLarge, MalformedBody, UnsupportedBody
from gateway._settings import RESERVED_PREFIX
from gateway._state import CLOCK, FACTORY, SETTINGS
from gateway.auth._middleware import request_state, require_csrf
from gateway.auth._request_state import PAGE_CSRF, SESSIONS
from gateway.logins._certificates import (
    Authority,
)
from gateway.logins._history import proven_by_email_only
from gateway.logins._passkeys import RelyingParty
from gateway.logins._settings import LoginSettings
from gateway.logins._setup_code import SETUP_CODE_KEY_PURPOSE
from gateway.logins._tan import TAN_KEY_PURPOSE
from gateway.logins._tokens import derive_key
from gateway.logins._totp import TOTP_PURPOSE
from gateway.tls._trusted_peers import client_address
from gateway.web._formatting import time_for
from gateway.web._pages import page_language, safe_next
from store import FRESH_BASIC_KEY, OUTBOX_PURPOSE, Level, Sealer

P = RESERVED_PREFIX
# Pages of ours that need script (WebAuthn): the core's CSP allows none, these allow 'self'.
SCRIPT_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PENDING_KEY = "logins.pending"  # session data: the user between password and second factor
PENDING_TTL_SECONDS = 300
CHALLENGE_KEY_ACCOUNT = "logins.register_challenge"  # session data: passkey registration
# FRESH_BASIC_KEY (store): when a password was re-confirmed inside a strong session. Fresh
# for actions that need a fresh *basic* login only.


@dataclass(kw_only=True)
class LoginContext:
    """Everything the pages need besides the core's app state. Built once per app."""

    settings: LoginSettings
    secret_key: bytes = field(repr=False)
    make_authority: Callable[[sessionmaker[Session]], Authority] | None
    rp: RelyingParty
    # The signer's client (issue 12): downloads are issued there, not with a key here.
    signer: SignerClient | None = None
    # The product catalogue (config section [firms], issue 13): the head users' pages.
    firms: FirmSettings = field(default_factory=FirmSettings)
    _authority: Authority | None = None
    # Fingerprints whose first use this replica has already noted: a cookieless client gets
    # its certificate session back (with a Set-Cookie) on every request, and must not cost a
    # locking store query each time.
    noted_certificates: set[str] = field(default_factory=set)

    @property
    def outbox_sealer(self) -> Sealer:
        return Sealer(secret=self.secret_key, purpose=OUTBOX_PURPOSE)

    @property
    def totp_sealer(self) -> Sealer:
        return Sealer(secret=self.secret_key, purpose=TOTP_PURPOSE)

    @property
    def tan_key(self) -> bytes:
        return derive_key(self.secret_key, TAN_KEY_PURPOSE)

    @property
    def setup_code_key(self) -> bytes:
        return derive_key(self.secret_key, SETUP_CODE_KEY_PURPOSE)

    def authority(self, factory: sessionmaker[Session]) -> Authority | None:
        if self.make_authority is None:
            return None
        if self._authority is None:
            self._authority = self.make_authority(factory)
        return self._authority


LOGINS = web.AppKey("logins", LoginContext)


# --- small helpers for handlers


def ctx(request: web.Request) -> LoginContext:
    return request.app[LOGINS]


def factory(request: web.Request) -> sessionmaker[Session]:
    return request.app[FACTORY]


def now_of(request: web.Request) -> datetime:
    return request.app[CLOCK]()


def client_addr(request: web.Request) -> str | None:
    return client_address(request, request.app[SETTINGS].trusted_networks)


def trust_hints(request: web.Request) -> dict[str, Any]:
    """What lifts the global lockout back-off for a login attempt (issue 17): the browser's
    remembered-device cookie and the user of a valid certificate on this connection."""
    from gateway.auth._certificate_identity import Identity
    from gateway.logins._devices import COOKIE_NAME as DEVICE_COOKIE

    certificate = request_state(request).certificate
    return {
        "device_token": request.cookies.get(DEVICE_COOKIE),
        "certificate_user_id": certificate.user_id if isinstance(certificate, Identity) else None,
    }


def next_of(source: Mapping[str, Any]) -> str:
    value = source.get("next")
    return safe_next(value if isinstance(value, str) else None)


def form_text(form: Mapping[str, Any], name: str, limit: int = 1024) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def page_url(path: str, **params: str) -> str:
    """``path`` with query parameters (empty values and ``next=/`` left out)."""
    query = {k: v for k, v in params.items() if v and not (k == "next" and v == "/")}
    return f"{path}?{urlencode(query)}" if query else path


async def ensure_session(request: web.Request) -> None:
    """Make sure a (pre-login, anonymous) session exists, so forms carry a CSRF token."""
    state = request_state(request)
    if state.session is not None:
        return
    new = await asyncio.to_thread(
        request.app[SESSIONS].start,
        user_id=None,
        level=Level.ANONYMOUS,
        method=None,
        now=now_of(request),
        client_addr=client_addr(request),
        authenticated=False,
    )
    state.session = new.state
    state.new_cookie = new.cookie
    state.clear_cookie = False
    request[PAGE_CSRF] = new.state.csrf_token


async def refresh_session(request: web.Request) -> None:
    """Re-read this request's session row from the store (one query; login steps only).

    A session's ``data`` carries a login flow from one step to the next (the TAN on its
    way, the user between password and second factor, a WebAuthn challenge). The next step
    may land on another worker or replica (a new connection, the load balancer), whose
    cached copy of the row (``gateway.auth`` Sessions, refreshed every ≤ 2 s) predates the
    previous step's write: without this read the broker was sent back to the start of the
    flow, and a single-use challenge consumed elsewhere was still there.
    """
    state = request_state(request)
    if state.session is None:
        return
    fresh = await asyncio.to_thread(request.app[SESSIONS].read, state.session.id)
    if fresh is not None and fresh.ended_at is None:  # an ended one: the next request sees it
        state.session = fresh


async def update_session_data(request: web.Request, **changes: Any) -> None:
    """Merge ``changes`` into the session's data (None removes a key), on the stored data:
    a cached copy could lose what another replica wrote (see :func:`refresh_session`)."""
    await refresh_session(request)
    state = request_state(request)
    assert state.session is not None
    data = {**state.session.data, **changes}
    data = {k: v for k, v in data.items() if v is not None}
    state.session = await asyncio.to_thread(
        request.app[SESSIONS].update, state.session, now=now_of(request), data=data
    )


def user_level(request: web.Request) -> Level:
    identity = request_state(request).identity
    return identity.level if identity is not None else Level.ANONYMOUS


def is_fresh(request: web.Request, *, level: Level) -> bool:
    """A factor good for ``level`` was presented within ``fresh_login`` — or the certificate
    is on this request."""
    state = request_state(request)
    if state.identity is not None and state.identity.cert_fingerprint is not None:
        return True  # SECURITY: the certificate's key is proven on this very connection
    session = state.session
    if session is None:
        return False
    now, window = now_of(request), ctx(request).settings.fresh_login
    # authenticated_at is when a factor of the session's own level was presented.
    if session.authenticated_at is not None and now - session.authenticated_at <= window:
        return True
    if level.rank > Level.BASIC.rank:
        return False
    # SECURITY: a password re-confirmed inside a strong session is fresh for basic actions
    # only; it must not let a strong action (second-factor reset) through.
    basic_at = session.data.get(FRESH_BASIC_KEY)
    return isinstance(basic_at, str) and now - datetime.fromisoformat(basic_at) <= window


def require_user(request: web.Request, *, level: Level = Level.BASIC) -> int:
    """The logged-in user's id at ``level`` or more; otherwise off to the login/step-up page."""
    state = request_state(request)
    here = request.path_qs
    if state.identity is None:
        raise redirect(page_url(f"{P}/login", next=here))
    if not state.identity.level.satisfies(level):
        raise redirect(page_url(f"{P}/step-up", next=here, level=level.value))
    return state.identity.user_id


def email_only_refusal(
    request: web.Request, *, back: str, as_json: bool = False
) -> web.Response | None:
    """The page refusing a session proven by mailbox access alone (issue 14), or ``None``.

    SECURITY: broker number + TAN (or a remembered browser) proves only the mailbox; a
    factor enrolled, replaced, or a certificate downloaded (its password is mailed to the
    same mailbox) from such a session would make that one factor ``strong``. The broker is
    told to log in with the password (and the second factor, if set up) instead. Call it
    after :func:`require_user` and before :func:`require_fresh` (a re-confirmation by
    password inside a TAN session does not lift it: the full login asks for the second
    factor, the re-confirmation does not).
    """
    identity = request_state(request).identity
    if identity is None or not proven_by_email_only(identity.method):
        return None
    if as_json:
        from gateway.web._pages import CATALOGS

        text = request.app[CATALOGS].translate(
            page_language(request), "logins.password_required.json"
        )
        return web.json_response({"error": text}, status=403)
    return show(
        request,
        "password_required.html",
        {"login_url": page_url(f"{P}/login/password", next=back)},
        status=403,
    )


def require_fresh(request: web.Request, *, level: Level, back: str) -> int:
    """Like :func:`require_user`, and the login must be fresh (else the re-auth page)."""
    user_id = require_user(request, level=level)
    if not is_fresh(request, level=level):
        raise redirect(page_url(f"{P}/reauth", next=back, level=level.value))
    return user_id


# --- expiry banner (seed 000: a reminder in the portal about two months before expiry)


# --- rendering


FormValue = str | bytes | bytearray | web.FileField
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
JSON_TYPE = "application/json"


async def read_form(request: web.Request) -> MultiDictProxy[FormValue]:
    """The form of a POST, read the one way every handler of ours reads it.

    An empty body is an empty form (its CSRF check then fails with 403).

    Raises:
        UnsupportedBody: a non-empty body that is not a form (415).
        BodyTooLarge: over the app's ``client_max_size`` or field count (413).
        MalformedBody: bytes that are not the charset they claim (UTF-8 by default), an
            unknown charset, or broken multipart (400) — one log line, no traceback.
    """
    if request.can_read_body and request.content_type not in FORM_TYPES:
        raise UnsupportedBody(f"a {request.content_type!r} body where a form belongs")
    try:
        return await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge("form over the size or field limit") from None
    except (ValueError, LookupError, AssertionError, RuntimeError, HttpProcessingError) as exc:
        # UnicodeDecodeError is a ValueError; LookupError: an unknown charset; aiohttp's
        # multipart reader raises ValueError/AssertionError/RuntimeError on broken framing
        # and its header parser's BadHttpMessage on broken part headers.
        raise MalformedBody(f"unreadable form ({type(exc).__name__})") from None


async def json_body(request: web.Request) -> dict[str, Any]:
    """The JSON object our passkey script posts; its ``csrf`` member is checked.

    Raises:
        UnsupportedBody, BodyTooLarge, MalformedBody: as :func:`read_form`; also for JSON
            that does not parse, is nested too deeply for the parser (``RecursionError``:
            50,000 ``[``), or is not an object.
    """
    if request.content_type != JSON_TYPE:
        raise UnsupportedBody(f"a {request.content_type!r} body where JSON belongs")
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge("JSON over the size limit") from None
    except RecursionError:
        # SECURITY: json.loads recurses per nesting level; a deep body must be a 400, not
        # a 500 with a traceback per request (issue 17).
        raise MalformedBody("JSON nested too deeply") from None
    except (ValueError, LookupError) as exc:
        raise MalformedBody(f"unreadable JSON ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise MalformedBody("JSON that is not an object")
    require_csrf(request, {"csrf": body.get("csrf")})
    return body


def see_other(location: str) -> web.Response:
    """A 303 as a returned response (cookies can be added to it)."""
    return web.Response(status=303, headers={"Location": location})


def _next_minute(value: datetime) -> datetime:
    """``value`` rounded up to a full minute: pages show minutes, and "try again from 06:53"
    for 06:53:20 would name a minute in which trying again still fails (issue 16)."""
    floor = value.replace(second=0, microsecond=0)
    return floor if floor == value else floor + timedelta(minutes=1)


def error_text(request: web.Request, error: Exception) -> str:
    """The translated message of a LoginError (times in the page's language)."""
    from gateway.logins._errors import LoginError
    from gateway.web._pages import CATALOGS

    language = page_language(request)
    catalogs = request.app[CATALOGS]
    if not isinstance(error, LoginError):
        return catalogs.translate(language, "error.generic")
    params: dict[str, Any] = {}
    for name, value in error.params.items():
        params[name] = (
            time_for(request, _next_minute(value)) if isinstance(value, datetime) else value
        )
    key = error.key
    if key == "error.password_rejected":
        key = f"error.password_rejected.{params.pop('reason')}"
    return catalogs.translate(language, key, **params)


def show(
    request: web.Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    script: bool = False,
) -> web.Response:
    """Render ``logins/<template>``; ``script=True`` allows our own JavaScript (WebAuthn)."""
    from gateway.web._pages import render_page

    response = render_page(request, f"logins/{template}", context, status=status)
    if script:
        response.headers["Content-Security-Policy"] = SCRIPT_CSP
    return response
