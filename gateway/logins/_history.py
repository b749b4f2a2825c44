"""Last login time and method (seed 004: brokers are told to check it)."""

from __future__ import annotations

from datetime import datetime

from store import Level, User

# Values of users.last_login_method (String(16)) and of the gateway's method header.
METHOD_CERTIFICATE = "certificate"
METHOD_PASSWORD = "password"
METHOD_TOTP = "totp"
METHOD_RECOVERY = "recovery-code"
METHOD_PASSKEY = "passkey"
METHOD_EMAIL_TAN = "email-tan"
METHOD_DEVICE = "device"  # broker number + email on a browser remembered after a TAN
# "Continue without email" (seed 001): the broker-number flow ended before the TAN. Not
# written to the history (docs/logins.md); the name keeps its display text for old rows.
METHOD_RESTRICTED = "broker-number"

# The upstream's method header (and the assertion's amr) has exactly five values:
# certificate, totp, passkey, email-tan, password (gateway._metrics.LOGIN_METHODS). The
# login history keeps the finer name.
_SESSION_METHOD = {
    METHOD_RECOVERY: METHOD_TOTP,
    METHOD_DEVICE: METHOD_EMAIL_TAN,
    # The method names the login flow, the level what it proved: a restricted session is
    # the broker-number + e-mail TAN flow at level "restricted" (no TAN was checked).
    METHOD_RESTRICTED: METHOD_EMAIL_TAN,
}


# SECURITY (issue 14): sessions whose level rests on access to the mailbox alone (a TAN, or a
# browser remembered after one). They must never enrol or replace a second factor or fetch a
# certificate (whose password goes to that same mailbox): one factor would become `strong`.
EMAIL_ONLY_METHODS = frozenset({METHOD_EMAIL_TAN, METHOD_DEVICE, METHOD_RESTRICTED})


def proven_by_email_only(method: str | None) -> bool:
    """Whether a session with this (login or session) ``method`` proved only mailbox access."""
    return method in EMAIL_ONLY_METHODS


def session_method(method: str) -> str:
    """The session's method (what the upstream is told) for a login ``method``.

    A recovery code stands in for the TOTP code; a remembered browser for the e-mail TAN;
    "continue without email" is the e-mail TAN flow cut short (its level says so).
    """
    return _SESSION_METHOD.get(method, method)


def record_login(user: User, method: str, now: datetime) -> None:
    """Shift the last login to ``previous_*`` and note this one (caller's transaction).

    The account page shows the *previous* login, the one before the broker's current
    session: that is the one a broker can recognise as not theirs.
    """
    user.previous_login_at = user.last_login_at
    user.previous_login_method = user.last_login_method
    user.last_login_at = now
    user.last_login_method = method


def certificate_sign_on_is_a_login(elevated: Level | None) -> bool:
    """Whether a certificate single sign-on that made a session is a login of its own.

    Args:
        elevated: the level of the session the sign-on raised to ``strong``; None when it
            started a new session.

    A new certificate session is one login (issue 14: the history showed none, so brokers
    were told "first login" after years of certificate logins). Raising a ``basic``
    session continues the login that made it (password, TAN, remembered browser), which
    was recorded then: the same visit is not two logins. A ``restricted`` session recorded
    nothing (no factor was checked), so its sign-on is the login. Later requests on the
    certificate's session write nothing: the history costs one write per session, not per
    request.
    """
    return elevated is None or elevated in (Level.ANONYMOUS, Level.RESTRICTED)
