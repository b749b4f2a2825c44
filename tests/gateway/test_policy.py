"""Route requirements and the pure decision function."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import Outcome, RequestAuth, Requirement, RouteRule, decide, required_for
from gateway._paths import strip_segment_params
from gateway._settings import GatewaySettings
from gateway.auth._route_policy import tomcat_reading
from store import Level

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
DEADLINE = NOW + dt.timedelta(days=30)
RULES = (
    RouteRule(prefix="/antrag", level=Level.STRONG),
    RouteRule(prefix="/antrag/info", level=Level.ANONYMOUS),
    RouteRule(prefix="/vertrag", level=Level.BASIC),
    RouteRule(prefix="/vertrag", level=Level.STRONG, methods=("post",)),
    RouteRule(prefix="/konto", level=Level.BASIC, fresh_within=dt.timedelta(minutes=10)),
)


@pytest.mark.parametrize(
    ("path", "method", "level"),
    [
        ("/antrag", "GET", Level.STRONG),
        ("/antrag/info", "GET", Level.ANONYMOUS),  # longest prefix wins
        ("/antragsliste", "GET", Level.STRONG),  # plain prefix: protective
        ("/vertrag/1", "GET", Level.BASIC),
        ("/vertrag/1", "HEAD", Level.BASIC),
        ("/vertrag/1", "POST", Level.STRONG),  # method rule beats method-less
        ("/vertrag/1", "post", Level.STRONG),
        ("/elsewhere", "GET", Level.RESTRICTED),  # default
        ("/antrag/info/..;/x", "GET", Level.STRONG),  # Tomcat reading is stricter
    ],
)
def test_required_for(path: str, method: str, level: Level) -> None:
    assert required_for(path, method, RULES, Level.RESTRICTED).level is level


def auth(level: Level, **kw: object) -> RequestAuth:
    return RequestAuth(level=level, authenticated_at=NOW - dt.timedelta(minutes=1), **kw)  # type: ignore[arg-type]


def test_decisions() -> None:
    strong = Requirement(level=Level.STRONG)
    assert (
        decide(auth=auth(Level.STRONG), requirement=strong, now=NOW, twofa_deadline=None).outcome
        is Outcome.ALLOW
    )
    assert (
        decide(
            auth=RequestAuth(level=Level.ANONYMOUS),
            requirement=strong,
            now=NOW,
            twofa_deadline=None,
        ).outcome
        is Outcome.LOGIN
    )
    assert (
        decide(auth=auth(Level.BASIC), requirement=strong, now=NOW, twofa_deadline=None).outcome
        is Outcome.STEP_UP
    )
    assert (
        decide(
            auth=auth(Level.RESTRICTED),
            requirement=Requirement(level=Level.BASIC),
            now=NOW,
            twofa_deadline=None,
        ).outcome
        is Outcome.STEP_UP
    )
    problem = RequestAuth(level=Level.ANONYMOUS, certificate_problem=True)
    assert (
        decide(auth=problem, requirement=strong, now=NOW, twofa_deadline=None).outcome
        is Outcome.CERTIFICATE_PROBLEM
    )
    # anonymous routes stay open even with a broken certificate
    assert (
        decide(
            auth=problem,
            requirement=Requirement(level=Level.ANONYMOUS),
            now=NOW,
            twofa_deadline=None,
        ).outcome
        is Outcome.ALLOW
    )


def test_twofa_grace_until_deadline() -> None:
    strong = Requirement(level=Level.STRONG)
    basic = auth(Level.BASIC)
    dismissed = auth(Level.BASIC, twofa_prompt_dismissed=True)
    assert (
        decide(auth=basic, requirement=strong, now=NOW, twofa_deadline=DEADLINE).outcome
        is Outcome.TWOFA_PROMPT
    )
    grace = decide(auth=dismissed, requirement=strong, now=NOW, twofa_deadline=DEADLINE)
    assert grace.outcome is Outcome.ALLOW and grace.grace
    after = DEADLINE + dt.timedelta(seconds=1)
    assert (
        decide(auth=dismissed, requirement=strong, now=after, twofa_deadline=DEADLINE).outcome
        is Outcome.STEP_UP
    )
    # restricted users get no grace
    assert (
        decide(
            auth=auth(Level.RESTRICTED), requirement=strong, now=NOW, twofa_deadline=DEADLINE
        ).outcome
        is Outcome.STEP_UP
    )


def test_freshness() -> None:
    fresh = Requirement(level=Level.BASIC, fresh_within=dt.timedelta(minutes=10))
    ok = RequestAuth(level=Level.STRONG, authenticated_at=NOW - dt.timedelta(minutes=9))
    stale = RequestAuth(level=Level.STRONG, authenticated_at=NOW - dt.timedelta(minutes=11))
    assert decide(auth=ok, requirement=fresh, now=NOW, twofa_deadline=None).outcome is Outcome.ALLOW
    assert (
        decide(auth=stale, requirement=fresh, now=NOW, twofa_deadline=None).outcome
        is Outcome.STEP_UP
    )
    never = RequestAuth(level=Level.STRONG, authenticated_at=None)
    assert (
        decide(auth=never, requirement=fresh, now=NOW, twofa_deadline=None).outcome
        is Outcome.STEP_UP
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix": "antrag"}, "must start with /"),
        ({"prefix": "/antrag/"}, "trailing"),
        ({"prefix": "/a//b"}, "normal form"),
        ({"prefix": "/a/%2e%2e/b"}, "normal form"),
        ({"prefix": "/a%2Fb"}, "encoded slash"),
        ({"prefix": "/_gateway/x"}, "gateway's own pages"),
    ],
)
def test_route_rule_validation(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RouteRule(level=Level.BASIC, **kwargs)  # type: ignore[arg-type]


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="__Host-"):
        GatewaySettings(session_cookie_name="session")
    with pytest.raises(ValueError, match="2s"):
        GatewaySettings(revocation_refresh_interval=dt.timedelta(seconds=3))
    with pytest.raises(ValueError, match="twofa_deadline"):
        GatewaySettings(twofa_deadline="next spring")
    assert GatewaySettings(twofa_deadline="2027-03-31T00:00:00Z").twofa_deadline_at == dt.datetime(
        2027, 3, 31, tzinfo=dt.UTC
    )


@settings(max_examples=2000, deadline=None)
@given(path=st.text(alphabet="/.;aB%2e ", max_size=16))
def test_tomcat_reading_skips_only_work_that_changes_nothing(path: str) -> None:
    """The shortcut (issue 11) gives strip_segment_params' answer for every path."""
    assert tomcat_reading(path) == strip_segment_params(path)


def test_tomcat_reading_still_applies_to_params_and_dot_segments() -> None:
    assert tomcat_reading("/konto;jsessionid=1/../antrag") == "/antrag"
    assert tomcat_reading("/a/./b") == "/a/b"
    assert tomcat_reading("/portal/start") == "/portal/start"
