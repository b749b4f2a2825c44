"""The standalone gateway's per-connection memo of an allow decision (issue 11).

On a keep-alive TLS connection a browser sends request after request with the same
certificate (it cannot change within a connection) and the same session cookie. Deciding
each of them (the certificate evaluated from the trust cache, the cookie's session, its
user, single sign-on, the route policy, the identity headers and their signed assertion)
gives the same answer again, as long as the values it was made of have not changed and no
deadline has passed. :class:`DecisionMemos` keeps the first *plain allow* on the
connection and the next requests reuse it; nothing else is ever reused.

Key (an entry is never shared between two of these):

* the TLS connection: the entries live on it (held weakly, freed with it), at most
  :data:`ENTRIES_PER_CONNECTION` per connection, the oldest dropped first;
* the request's ``Cookie`` header byte for byte (the session cookie is read from it):
  another session, or none, is another entry;
* the route's :class:`~gateway.auth._route_policy.Requirement` (level, freshness, rights)
  for the normalised path and method: routes of different levels or rights never share.

Checked on every request, before the entry is used (else it is dropped and the request is
decided afresh, as without the memo):

* the trust cache's ``generation`` is the one read *before* the decision was made, and the
  cache is fresh. It moves on every load and every refresh round, so a revocation, a
  retirement, a deactivation (issue 13) or new trust material ends the entry with the
  refresh that brings it, as today (``revocation_refresh_interval``, ≤ 2 s);
* the session cache still holds the very object the decision was made on
  (``Sessions.cached(id) is session``). Every change replaces or removes it: a logout here
  (at once), on another replica (the session refresh, as today), a login or step-up (new
  id and cookie; the old one is forgotten), a data update, a touch; a stale cache answers
  None;
* ``since <= now < until``, with ``until`` from :func:`allow_until`: the earliest of the
  session's next touch (before its idle deadline), its absolute end, the certificate's
  not-after, the 2FA deadline, the route's freshness window, the caller's page bounds
  (the renewal interstitial) and the identity headers' reuse bound (assertion, renewal
  facts). The clock is the app's injected one.

Only the direct TLS mode uses it (``gateway._app``): behind a terminator or in forward-auth
mode one connection carries many clients' certificates.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from gateway._errors import PathRejected
from gateway._paths import NormalisedPath, normalise_path
from gateway._settings import RESERVED_PREFIX, GatewaySettings
from gateway.auth._certificate_identity import Identity
from gateway.auth._request_state import RequestState
from gateway.auth._route_policy import Requirement, required_for
from gateway.auth._sessions import Sessions, SessionState
from gateway.auth._trust_cache import TrustCache

__all__ = [
    "DECISION_MEMO",
    "ENTRIES_PER_CONNECTION",
    "MEMO_BASIS",
    "REUSED_HEADERS",
    "AllowMemo",
    "DecisionMemos",
    "MemoBasis",
    "allow_until",
    "memoisable",
]

# A browser holds one session per connection at a time; a few route classes (page, API,
# a right-protected area) cover a page and its requests. More is a churn we do not memoise.
ENTRIES_PER_CONNECTION = 4
# Request targets whose route class is kept (per app); cleared when full (bounded memory).
TARGET_LIMIT = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowMemo:
    """One reusable allow: what the request state and the upstream's headers were.

    Attributes:
        certificate: the connection's certificate evaluation (a valid one, or None).
        session: the session object as the session cache held it at the decision.
        identity: who is there.
        headers: the identity headers and signed assertion for the upstream.
        trust_generation: ``TrustCache.generation`` read before the decision was made.
        since, until: the entry serves requests at ``since <= now < until``.
    """

    certificate: Identity | None
    session: SessionState
    identity: Identity
    headers: Mapping[str, str]
    trust_generation: int
    since: datetime
    until: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoBasis:
    """What a request that found no entry brings to :meth:`DecisionMemos.remember`: its
    connection, key and the trust generation read before it was decided."""

    connection: Any
    cookie: str
    requirement: Requirement
    trust_generation: int


def allow_until(
    *,
    session: SessionState,
    identity: Identity,
    requirement: Requirement,
    now: datetime,
    touch_interval: timedelta,
    twofa_deadline: datetime | None,
    bounds: tuple[datetime | None, ...] = (),
) -> datetime:
    """Until when an allow made at ``now`` stays the same answer (pure; see the module
    docstring). ``bounds`` are the caller's further instants (None: no bound)."""
    # SECURITY: the touch comes before the idle deadline (touch_interval < idle_timeout),
    # so an idle session is decided afresh, and ends, on the very request that finds it.
    instants = [session.last_seen_at + touch_interval, session.absolute_expires_at]
    if identity.cert_not_after is not None:
        instants.append(identity.cert_not_after)
    if twofa_deadline is not None and now < twofa_deadline:
        instants.append(twofa_deadline)  # a "Not now" allow becomes the step-up page
    if requirement.fresh_within is not None and identity.cert_fingerprint is None:
        # A certificate proves itself on the connection (always fresh); a session's
        # login is fresh only for the route's window.
        if session.authenticated_at is None:
            return now  # never fresh: nothing to reuse
        instants.append(session.authenticated_at + requirement.fresh_within)
    instants += [moment for moment in bounds if moment is not None]
    return min(instants)


def memoisable(state: RequestState) -> bool:
    """Whether the auth middleware's ``state`` is a plain allow that may be reused: someone
    logged in, on a live session, with no cookie to set or clear, no refusal, and no
    certificate problem."""
    return (
        state.identity is not None
        and state.session is not None
        and state.new_cookie is None
        and not state.clear_cookie
        and state.refusal is None
        and (state.certificate is None or isinstance(state.certificate, Identity))
    )


class DecisionMemos:
    """The app's per-connection allow memos (``app[DECISION_MEMO]``, made by ``create_app``
    in direct TLS mode; owned by the app, each connection's entries by the connection).

    Args:
        per_connection: entries kept per connection (the oldest goes first).
    """

    def __init__(self, *, per_connection: int = ENTRIES_PER_CONNECTION) -> None:
        if per_connection < 1:
            raise ValueError("per_connection must be at least 1")
        self._per_connection = per_connection
        self._by_connection: weakref.WeakKeyDictionary[
            Any, dict[tuple[str, Requirement], AllowMemo]
        ] = weakref.WeakKeyDictionary()
        self._targets: dict[tuple[str, str], tuple[NormalisedPath, Requirement]] = {}
        self.hits = 0  # requests answered from a memo (tests and the profile read it)

    def route_class(
        self, raw_target: str, method: str, settings: GatewaySettings
    ) -> tuple[NormalisedPath, Requirement] | None:
        """The normalised path of ``raw_target`` and the route policy's requirement for it
        (pure functions of the target, the method and the settings: kept per target), or
        None when the policy middleware answers it with a page of its own (an ambiguous
        spelling, the reserved prefix): never memoised."""
        key = (raw_target, method)
        found = self._targets.get(key)
        if found is not None:
            return found
        try:
            normalised = normalise_path(raw_target)
        except PathRejected:
            return None
        if normalised.path.lower().startswith(RESERVED_PREFIX.lower()):
            return None
        requirement = required_for(normalised.path, method, settings.routes, settings.default_level)
        if len(self._targets) >= TARGET_LIMIT:
            self._targets.clear()
        self._targets[key] = found = (normalised, requirement)
        return found

    @property
    def connections(self) -> int:
        """How many live connections hold entries."""
        return len(self._by_connection)

    def sizes(self) -> list[int]:
        """How many entries each live connection holds."""
        return [len(entries) for entries in list(self._by_connection.values())]

    def reuse(
        self,
        connection: Any,
        cookie: str,
        requirement: Requirement,
        *,
        now: datetime,
        trust: TrustCache,
        sessions: Sessions,
    ) -> AllowMemo | None:
        """The entry for this key if it still holds at ``now`` (the module docstring's
        checks), else None (and a failed entry is dropped)."""
        try:
            entries = self._by_connection.get(connection)
        except TypeError:  # not weak-referenceable: nothing is memoised on it
            return None
        if entries is None:
            return None
        key = (cookie, requirement)
        memo = entries.get(key)
        if memo is None:
            return None
        if (
            memo.trust_generation == trust.generation
            and trust.fresh
            and memo.since <= now < memo.until
            and sessions.cached(memo.session.id) is memo.session
        ):
            self.hits += 1
            return memo
        del entries[key]
        return None

    def remember(self, basis: MemoBasis, memo: AllowMemo) -> None:
        """Keep ``memo`` for ``basis``'s connection and key."""
        if memo.until <= memo.since:
            return
        try:
            entries = self._by_connection.setdefault(basis.connection, {})
        except TypeError:
            return
        key = (basis.cookie, basis.requirement)
        entries.pop(key, None)
        if len(entries) >= self._per_connection:
            del entries[next(iter(entries))]  # insertion order: the oldest
        entries[key] = memo


DECISION_MEMO = web.AppKey("decision_memo", DecisionMemos)
"""The app's memos; absent when the mode has no per-client connection (terminator,
forward-auth)."""

MEMO_BASIS = web.RequestKey("gateway.memo_basis", MemoBasis)
"""Set by the auth middleware on a request bound upstream that found no entry."""

REUSED_HEADERS: web.RequestKey[dict[str, str]] = web.RequestKey("gateway.identity_headers")
"""The identity headers decided for this request (a fresh dict), when the memo gave them
or the policy made them while remembering; the upstream handler uses them."""
