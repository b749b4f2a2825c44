"""Route rights (issue 13): a rule may need a product right; the pure part of the decision."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from brokergate._config import ConfigError, load_config
from ca import FirmSettings
from gateway import (
    Outcome,
    RequestAuth,
    Requirement,
    RouteRule,
    check_route_rights,
    decide,
    required_for,
)
from store import Level

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
RULES = (
    RouteRule(prefix="/antrag", level=Level.BASIC),
    RouteRule(prefix="/antrag/orv", level=Level.BASIC, right="ORV"),
    RouteRule(prefix="/antrag/dil", level=Level.STRONG, right="DIL"),
    RouteRule(prefix="/x", level=Level.BASIC, right="DIP"),
)


def auth(level: Level, *rights: str, **kw: object) -> RequestAuth:
    return RequestAuth(
        level=level,
        authenticated_at=NOW - dt.timedelta(minutes=1),
        rights=frozenset(rights),
        **kw,  # type: ignore[arg-type]
    )


def outcome(request_auth: RequestAuth, path: str, deadline: dt.datetime | None = None) -> Outcome:
    requirement = required_for(path, "GET", RULES, Level.BASIC)
    return decide(
        auth=request_auth, requirement=requirement, now=NOW, twofa_deadline=deadline
    ).outcome


def test_required_for_carries_the_rules_right() -> None:
    assert required_for("/antrag/orv/neu", "GET", RULES, Level.BASIC).rights == ("ORV",)
    assert required_for("/ANTRAG/ORV", "GET", RULES, Level.BASIC).rights == ("ORV",)
    assert required_for("/antrag/kfz", "GET", RULES, Level.BASIC).rights == ()
    # Tomcat reads /antrag/orv;x/../dil as /antrag/dil: both readings' rights are needed
    both = required_for("/antrag/orv;x/../dil", "GET", RULES, Level.BASIC)
    assert both.rights == ("DIL", "ORV") and both.level is Level.STRONG


def test_a_user_without_the_right_gets_no_right_with_the_missing_key() -> None:
    requirement = required_for("/antrag/orv", "GET", RULES, Level.BASIC)
    decision = decide(
        auth=auth(Level.BASIC, "DIL", "DIP"), requirement=requirement, now=NOW, twofa_deadline=None
    )
    assert decision.outcome is Outcome.NO_RIGHT and decision.missing_right == "ORV"
    assert outcome(auth(Level.BASIC, "ORV"), "/antrag/orv") is Outcome.ALLOW
    assert outcome(auth(Level.BASIC), "/antrag/kfz") is Outcome.ALLOW  # no right needed


def test_the_level_comes_before_the_right() -> None:
    assert outcome(RequestAuth(level=Level.ANONYMOUS), "/antrag/orv") is Outcome.LOGIN
    # a restricted (broker number) session has no rights: it is asked to step up, since
    # the right belongs to a proven person
    assert outcome(auth(Level.RESTRICTED), "/antrag/orv") is Outcome.STEP_UP
    assert outcome(auth(Level.BASIC), "/antrag/dil") is Outcome.STEP_UP
    assert outcome(auth(Level.STRONG), "/antrag/dil") is Outcome.NO_RIGHT
    assert outcome(auth(Level.STRONG, "DIL"), "/antrag/dil") is Outcome.ALLOW


def test_the_2fa_grace_does_not_skip_the_right() -> None:
    deadline = NOW + dt.timedelta(days=3)
    dismissed = auth(Level.BASIC, twofa_prompt_dismissed=True)
    assert outcome(dismissed, "/antrag/dil", deadline) is Outcome.NO_RIGHT
    granted = auth(Level.BASIC, "DIL", twofa_prompt_dismissed=True)
    requirement = required_for("/antrag/dil", "GET", RULES, Level.BASIC)
    decision = decide(auth=granted, requirement=requirement, now=NOW, twofa_deadline=deadline)
    assert decision.outcome is Outcome.ALLOW and decision.grace


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": Level.RESTRICTED, "right": "ORV"}, "must be basic or strong, not restricted"),
        ({"level": Level.ANONYMOUS, "right": "ORV"}, "must be basic or strong, not anonymous"),
        ({"level": Level.BASIC, "right": " "}, "right must not be empty"),
    ],
)
def test_route_rule_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RouteRule(prefix="/antrag/orv", **kwargs)  # type: ignore[arg-type]


def test_requirement_defaults_to_no_rights() -> None:
    assert Requirement(level=Level.BASIC).rights == ()


# --- at config load: the right must be in the [firms] catalogue


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "brokergate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_route_right_outside_the_catalogue_is_a_config_error(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        '[[gateway.routes]]\nprefix = "/antrag/kfz"\nlevel = "basic"\nright = "KFZ"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == "gateway.routes" and str(path) in str(info.value)
    assert "'KFZ', which is not in the [firms] product catalogue" in str(info.value)
    assert "known: DIP, DIL, ORV" in str(info.value) or "known: DIL, DIP, ORV" in str(info.value)


def test_a_route_right_of_a_configured_product_loads(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        "[[firms.products]]\n"
        'key = "KFZ"\nde = "Kfz-Versicherung"\nen = "Motor insurance"\nnl = "Autoverzekering"\n'
        '[[gateway.routes]]\nprefix = "/antrag/kfz"\nlevel = "strong"\nright = "KFZ"\n',
    )
    config = load_config(path, env={})
    (rule,) = config.gateway.routes
    assert rule.right == "KFZ" and config.firms.product("KFZ").name("nl") == "Autoverzekering"
    with pytest.raises(ValueError, match="not in the \\[firms\\] product catalogue"):
        check_route_rights(config.gateway.routes, FirmSettings())
