"""Who is there on this request: one pure decision over what the store and caches said.

The auth middleware (``gateway.auth._middleware``) reads first — the presented
certificate's evaluation, the cookie's session, that session's user, and the certificate
session this replica already holds for the certificate — then calls
:func:`resolve_request`, then carries out the :class:`Resolution` (end a session, start
or elevate one, record activity). No store write happens inside the decision, and the
decision reads nothing but its arguments, the clock included (STYLE: sans I/O).

The rules, in order:

1. A session that is over (idle, absolute end), or bound to a certificate that is not
   presented or no longer valid, ends (``end``) and its cookie is cleared.
2. A session whose user is gone or may not log in (``UserRecord.may_log_in``: not active,
   or ``ca.login_refusal`` says no, e.g. the office was deactivated) ends likewise; the
   refusal is reported (``refusal``) so the broker is told why, not shown a login form.
3. Single sign-on with a valid certificate (:class:`SignOn`): the certificate's own
   session is kept; a lower session of the same user is elevated to ``strong``; another
   user's session ends and the certificate's session is reused (a client without cookies)
   or started. With ``certificate_requires_password`` the certificate only raises a
   *password* session of the same user (second factor) and alone logs nobody in.
4. Activity is recorded (``touch``) at most once per ``touch_interval`` (a minute, or a
   quarter of a shorter idle timeout: ``touch_interval_for``), not for paths in
   ``inactivity_exempt_paths``, and not for a session just started or elevated.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from gateway.auth._certificate_identity import CertificateProblem, Identity, UserRecord
from gateway.auth._session_rules import (
    SessionState,
    SessionVerdict,
    is_a_login,
    session_verdict,
)
from store import Level

if TYPE_CHECKING:
    from ca import LoginRefusal

__all__ = ["PASSWORD_METHOD", "Resolution", "SignOn", "inactivity_exempt", "resolve_request"]

PASSWORD_METHOD = "password"


class SignOn(enum.Enum):
    """What single sign-on does with the session (``None`` in :class:`Resolution`: no
    valid certificate, nothing to do)."""

    KEEP = "keep"  # the session stays as it is (already the certificate's, or strong)
    ELEVATE = "elevate"  # the same user's lower session becomes strong, bound to the cert
    REUSE = "reuse"  # this replica's live session of the certificate (client w/o cookies)
    START = "start"  # a new strong session bound to the certificate


@dataclass(frozen=True, kw_only=True)
class Resolution:
    """What to do for a request, decided by :func:`resolve_request`.

    Attributes:
        end: a session to end first (over, or another user's on this certificate).
        sign_on: the single sign-on step, or None without a valid certificate.
        session: the session that stays when no new one is made (``sign_on`` None, KEEP or
            REUSE: the reused one); None when nobody is logged in.
        user_from_certificate: the identity's user is the certificate's (after SSO).
        touch: record activity on ``session``.
        clear_cookie: the response deletes the session cookie.
        idle_logout: ``end`` is a login that went idle (``Sessions.end_idle`` notes it, and
            the login page says so).
        refusal: why ``end`` is the session of a user who may no longer log in (issue 13).
    """

    end: SessionState | None = None
    sign_on: SignOn | None = None
    session: SessionState | None = None
    user_from_certificate: bool = False
    touch: bool = False
    clear_cookie: bool = False
    idle_logout: bool = False
    refusal: LoginRefusal | None = None


def inactivity_exempt(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether requests to ``path`` must not count as activity (``inactivity_exempt_paths``)."""
    return any(path.startswith(p) for p in prefixes)


def _sign_on(session: SessionState | None, cert: Identity, *, requires_password: bool) -> SignOn:
    same_user = session is not None and session.user_id == cert.user_id
    if session is not None and same_user and session.cert_fingerprint == cert.cert_fingerprint:
        return SignOn.KEEP  # already the certificate's session
    if requires_password:
        if (
            session is not None
            and same_user
            and session.level is Level.BASIC
            and session.method == PASSWORD_METHOD
        ):
            return SignOn.ELEVATE
        return SignOn.KEEP
    if session is not None and same_user and session.level is Level.STRONG:
        return SignOn.KEEP  # strong by TOTP/passkey already; keep it
    if session is not None and same_user:
        return SignOn.ELEVATE
    return SignOn.START  # REUSE when the replica holds the certificate's session


def resolve_request(
    *,
    certificate: Identity | CertificateProblem | None,
    session: SessionState | None,
    session_user: UserRecord | None,
    certificate_session: SessionState | None,
    path: str,
    now: datetime,
    idle_timeout: timedelta,
    touch_interval: timedelta,
    inactivity_exempt_paths: tuple[str, ...],
    certificate_requires_password: bool,
) -> Resolution:
    """Decide a request's session (the module docstring has the rules).

    Args:
        certificate: the presented certificate's evaluation (None: none presented).
        session: the cookie's live session, as the cache or the store has it (None: no
            cookie, or an unknown or ended one).
        session_user: ``session``'s user, None if there is none.
        certificate_session: the live session this replica started for the presented
            certificate's fingerprint and user, if any (``Sessions.certificate_session``).
        path: the request path (for ``inactivity_exempt_paths``).
        now: the injected clock's time.
    """
    cert = certificate if isinstance(certificate, Identity) else None
    end: SessionState | None = None
    clear = idle = False
    refusal: LoginRefusal | None = None
    if session is not None:
        presented = (
            cert.cert_fingerprint if cert is not None and cert.user_id == session.user_id else None
        )
        verdict = session_verdict(
            session, now=now, idle_timeout=idle_timeout, presented_fingerprint=presented
        )
        if verdict is not SessionVerdict.ACTIVE:
            # SECURITY: a certificate session whose certificate is gone or no longer valid
            # (revoked!) ends here, on the very next request.
            idle = verdict is SessionVerdict.IDLE and is_a_login(session)
            end, session, clear = session, None, True
    if session is not None and session.user_id is not None:
        if session_user is None or not session_user.may_log_in:
            # SECURITY (issue 13): deactivation (of the user or the office) holds on every
            # request, on every replica, once the user cache has the refusal.
            refusal = session_user.refusal if session_user is not None else None
            end, session, clear = session, None, True

    sign_on: SignOn | None = None
    if cert is not None:
        sign_on = _sign_on(session, cert, requires_password=certificate_requires_password)
        if sign_on is SignOn.START:
            if session is not None:
                # SECURITY: another user's session on a connection presenting this cert.
                end, idle = session, False
            session = None
            if certificate_session is not None:
                sign_on, session = SignOn.REUSE, certificate_session
        elif sign_on is SignOn.ELEVATE:
            pass  # the middleware elevates ``session``
        if sign_on is not SignOn.KEEP:
            clear = False  # a new cookie is set instead
    made_new = sign_on in (SignOn.START, SignOn.ELEVATE)
    user_from_certificate = cert is not None and (
        made_new or (session is not None and session.user_id == cert.user_id)
    )
    touch = (
        session is not None
        and not made_new
        and not inactivity_exempt(path, inactivity_exempt_paths)
        and now - session.last_seen_at >= touch_interval
    )
    return Resolution(
        end=end,
        sign_on=sign_on,
        session=session,
        user_from_certificate=user_from_certificate,
        touch=touch,
        clear_cookie=clear,
        idle_logout=idle,
        refusal=refusal,
    )
