"""The route policy: which level a request needs, and what to do about it (pure functions).

``required_for(path, method, rules, default)`` finds the requirement of a normalised path;
``request_auth(state, now)`` reads what a request has from the auth middleware's state;
``decide(auth, requirement, now, twofa_deadline)`` turns that into one :class:`Decision`.
None does I/O; the clock value is passed in.

Matching rules (docs/gateway.md "Route policy"):

* Prefixes are compared case-insensitively, so ``/ANTRAG`` needs what ``/antrag`` needs
  even when the upstream is case-sensitive (over-protecting is the safe error).
* The longest matching prefix wins; at equal length a rule naming the request's method
  beats one without methods. Prefixes are plain string prefixes (``/admin`` also covers
  ``/administration``), again erring on the protective side.
* Every path is also read as Tomcat reads it (``;params`` dropped from segments, then dot
  segments resolved); the higher of both requirements applies.
* A rule may also name a product ``right`` (issue 13): the session's user must hold it
  (``ca.effective_rights``); without it the answer is the "no right" page, never a bare
  403. Where both readings of a path match rules, both rules' rights are needed.
* Spellings other servers fold (trailing dots and spaces per segment as IIS does, Unicode
  NFKC) never get here: ``gateway._paths`` refuses them (rule 4), so a prefix matched
  here is the prefix every server reads (issue 17).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ca import FirmSettings
from gateway._paths import strip_segment_params
from gateway._settings import RouteRule
from gateway.auth._certificate_identity import CertificateProblem
from store import Level

if TYPE_CHECKING:
    from gateway.auth._request_state import RequestState

__all__ = [
    "Decision",
    "Outcome",
    "RequestAuth",
    "Requirement",
    "check_route_rights",
    "decide",
    "request_auth",
    "required_for",
    "tomcat_reading",
]


@dataclass(frozen=True, kw_only=True)
class Requirement:
    level: Level
    fresh_within: timedelta | None = None
    rights: tuple[str, ...] = ()  # product rights the user must hold, sorted


def check_route_rights(rules: Sequence[RouteRule], firms: FirmSettings) -> None:
    """Every route's ``right`` is a key of the ``[firms]`` product catalogue.

    Raises:
        ValueError: naming the route, the unknown key and the known ones.
    """
    known = firms.keys()
    for rule in rules:
        if rule.right is not None and rule.right not in known:
            raise ValueError(
                f"route {rule.prefix!r} needs right {rule.right!r}, which is not in the "
                f"[firms] product catalogue (known: {', '.join(known)})"
            )


def _match(path: str, method: str, rules: Sequence[RouteRule]) -> RouteRule | None:
    lowered = path.lower()
    best: RouteRule | None = None
    best_key = (-1, -1)
    for rule in rules:
        if not lowered.startswith(rule.prefix.lower()):
            continue
        if rule.methods and method not in rule.methods:
            continue
        key = (len(rule.prefix), 1 if rule.methods else 0)
        if key > best_key:
            best, best_key = rule, key
    return best


def _requirement(rule: RouteRule | None, default: Level) -> Requirement:
    if rule is None:
        return Requirement(level=default)
    return Requirement(
        level=rule.level,
        fresh_within=rule.fresh_within,
        rights=(rule.right,) if rule.right is not None else (),
    )


def _stricter(a: Requirement, b: Requirement) -> Requirement:
    level = a.level if a.level.rank >= b.level.rank else b.level
    fresh = [f for f in (a.fresh_within, b.fresh_within) if f is not None]
    return Requirement(
        level=level,
        fresh_within=min(fresh) if fresh else None,
        rights=tuple(sorted({*a.rights, *b.rights})),
    )


def tomcat_reading(path: str) -> str:
    """``strip_segment_params(path)``, without its work when it cannot change ``path``: an
    absolute path without ``;``, ``//`` and ``/.`` reads the same both ways (most requests;
    issue 11, a property test checks that both give the same result)."""
    if path.startswith("/") and ";" not in path and "//" not in path and "/." not in path:
        return path
    return strip_segment_params(path)


def required_for(path: str, method: str, rules: Sequence[RouteRule], default: Level) -> Requirement:
    """The requirement of a *normalised* path (``gateway._paths.normalise_path(...).path``).

    HEAD is matched as GET (it returns GET's headers, RFC 9110 §9.3.2).
    """
    method = method.upper()
    if method == "HEAD":
        method = "GET"
    requirement = _requirement(_match(path, method, rules), default)
    tomcat = tomcat_reading(path)
    if tomcat != path:
        requirement = _stricter(requirement, _requirement(_match(tomcat, method, rules), default))
    return requirement


class Outcome(enum.StrEnum):
    ALLOW = "allow"
    LOGIN = "login"  # nobody is logged in: the login page
    STEP_UP = "step_up"  # logged in, but too low or not fresh enough
    TWOFA_PROMPT = "twofa_prompt"  # basic user before the 2FA deadline: "activate 2FA / Not now"
    CERTIFICATE_PROBLEM = "certificate_problem"  # a certificate of ours that cannot be used
    NO_RIGHT = "no_right"  # logged in as needed, but without the route's product right


@dataclass(frozen=True, kw_only=True)
class RequestAuth:
    """What the request has, from its session and/or its certificate.

    ``certificate_problem`` is True when the connection presented a certificate of ours
    that cannot be used (expired, revoked, …); the problem itself is rendered by the app.
    """

    level: Level
    authenticated_at: datetime | None = None
    twofa_prompt_dismissed: bool = False
    certificate_problem: bool = False
    rights: frozenset[str] = frozenset()  # the user's effective product rights


def request_auth(state: RequestState, now: datetime) -> RequestAuth:
    """What a request has, from the auth middleware's ``RequestState`` at ``now``."""
    session = state.session
    identity = state.identity
    authenticated_at = session.authenticated_at if session is not None else None
    if identity is not None and identity.cert_fingerprint is not None:
        # The certificate's key is proven on this very connection: as fresh as it gets
        # (the logins pages treat it the same way).
        authenticated_at = now
    return RequestAuth(
        level=identity.level if identity is not None else Level.ANONYMOUS,
        authenticated_at=authenticated_at,
        twofa_prompt_dismissed=session.twofa_prompt_dismissed if session else False,
        certificate_problem=isinstance(state.certificate, CertificateProblem),
        rights=frozenset(identity.firm.rights)
        if identity is not None and identity.firm is not None
        else frozenset(),
    )


@dataclass(frozen=True, kw_only=True)
class Decision:
    outcome: Outcome
    required: Level
    grace: bool = False  # allowed only because "Not now" was pressed before the deadline
    missing_right: str | None = None  # NO_RIGHT: the first right the user lacks


def _allow(auth: RequestAuth, requirement: Requirement, *, grace: bool = False) -> Decision:
    """ALLOW, unless the user lacks one of the route's rights (then NO_RIGHT)."""
    for right in requirement.rights:
        if right not in auth.rights:
            return Decision(
                outcome=Outcome.NO_RIGHT, required=requirement.level, missing_right=right
            )
    return Decision(outcome=Outcome.ALLOW, required=requirement.level, grace=grace)


def decide(
    *,
    auth: RequestAuth,
    requirement: Requirement,
    now: datetime,
    twofa_deadline: datetime | None,
) -> Decision:
    """What happens to a request with ``auth`` on a route needing ``requirement`` at ``now``.

    The level (and freshness) comes first: a missing right is only reported to someone
    logged in as the route needs, since stepping up could change who is there.
    """
    required = requirement.level
    fresh = requirement.fresh_within is None or (
        auth.authenticated_at is not None
        and now - auth.authenticated_at <= requirement.fresh_within
    )
    if auth.level.satisfies(required) and fresh:
        return _allow(auth, requirement)
    in_grace = twofa_deadline is not None and now < twofa_deadline
    if required is Level.STRONG and auth.level is Level.BASIC and in_grace and fresh:
        if auth.twofa_prompt_dismissed:
            return _allow(auth, requirement, grace=True)
        return Decision(outcome=Outcome.TWOFA_PROMPT, required=required)
    if auth.certificate_problem and not auth.level.satisfies(required):
        return Decision(outcome=Outcome.CERTIFICATE_PROBLEM, required=required)
    if auth.level is Level.ANONYMOUS:
        return Decision(outcome=Outcome.LOGIN, required=required)
    return Decision(outcome=Outcome.STEP_UP, required=required)
