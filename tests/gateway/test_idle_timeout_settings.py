"""Issue 16: ``idle_timeout`` (and its neighbours) are checked, and activity is written often
enough for a short idle timeout."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from gateway import Sessions
from gateway._settings import GatewaySettings
from gateway.auth._sessions import TOUCH_INTERVAL, touch_interval_for
from gateway.logins import LoginSettings
from store import Level, User, session_factory
from tests.conftest import CliRunner


@pytest.mark.parametrize(
    ("idle", "expected"),
    [
        (dt.timedelta(minutes=15), TOUCH_INTERVAL),
        (dt.timedelta(minutes=4), TOUCH_INTERVAL),
        (dt.timedelta(seconds=40), dt.timedelta(seconds=10)),
        (dt.timedelta(seconds=10), dt.timedelta(seconds=2.5)),
    ],
)
def test_activity_is_written_every_minute_or_a_quarter_of_a_shorter_timeout(
    idle: dt.timedelta, expected: dt.timedelta
) -> None:
    assert touch_interval_for(idle) == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"idle_timeout": dt.timedelta(seconds=5)}, "idle_timeout must be between 10s and 24h"),
        ({"idle_timeout": dt.timedelta(0)}, "idle_timeout must be between 10s and 24h"),
        (
            {"idle_timeout": dt.timedelta(hours=25), "absolute_timeout": dt.timedelta(days=2)},
            "idle_timeout must be between 10s and 24h (got 25h)",
        ),
        (
            {"idle_timeout": dt.timedelta(hours=2), "absolute_timeout": dt.timedelta(hours=1)},
            "absolute_timeout must be between idle_timeout and 30 days (got 1h, idle_timeout 2h)",
        ),
        ({"absolute_timeout": dt.timedelta(days=31)}, "absolute_timeout must be between"),
    ],
)
def test_out_of_range_session_timeouts_are_refused(
    overrides: dict[str, dt.timedelta], message: str
) -> None:
    with pytest.raises(ValueError) as caught:
        GatewaySettings(**overrides)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_the_bounds_themselves_are_accepted() -> None:
    GatewaySettings(idle_timeout=dt.timedelta(seconds=10), absolute_timeout=dt.timedelta(days=30))
    GatewaySettings(idle_timeout=dt.timedelta(hours=24), absolute_timeout=dt.timedelta(hours=24))
    LoginSettings(fresh_login=dt.timedelta(seconds=10))
    LoginSettings(fresh_login=dt.timedelta(hours=24))


@pytest.mark.parametrize("value", [dt.timedelta(seconds=3), dt.timedelta(days=2)])
def test_out_of_range_fresh_login_is_refused(value: dt.timedelta) -> None:
    with pytest.raises(ValueError, match="fresh_login must be between 10s and 24h"):
        LoginSettings(fresh_login=value)


def test_the_cli_names_the_bad_idle_timeout_in_one_line(run_cli: CliRunner, tmp_path) -> None:
    config = tmp_path / "brokergate.toml"
    config.write_text('[gateway]\nidle_timeout = "5s"\n')
    result = run_cli("config", "check", env={"BROKERGATE_CONFIG": str(config)})
    assert result.code != 0 and "Traceback" not in result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "gateway: idle_timeout must be between 10s and 24h (got 5s)" in lines[0]
    assert 'idle_timeout = "15m"' in lines[0]


def test_a_broker_clicking_every_ten_seconds_stays_with_a_20_second_timeout(
    engine: Engine, make_user: Callable[..., User], clock
) -> None:
    """Issue 16: with one write a minute, a 20-second idle timeout ended a session that was
    used every 10 seconds (the last write lay more than 20 s back)."""
    settings = GatewaySettings(idle_timeout=dt.timedelta(seconds=20))
    store = Sessions(factory=session_factory(engine), settings=settings)
    other = Sessions(factory=session_factory(engine), settings=settings)  # another replica
    user_id = make_user(email="click@example.org").id
    new = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    for step in range(18):  # three minutes of clicks, alternating replicas
        clock.advance(dt.timedelta(seconds=10))
        replica = store if step % 2 else other
        state = replica.load(new.cookie, clock())
        assert state is not None, f"logged out after {(step + 1) * 10}s of clicking"
        replica.touch(state, clock())
    clock.advance(dt.timedelta(seconds=21))
    assert store.load(new.cookie, clock()) is None  # and idle still ends it


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("tan_validity", dt.timedelta(seconds=30)),  # the TAN page read "0 Minuten gültig"
        ("tan_validity", dt.timedelta(seconds=90)),  # ... and "1 Minuten"
        ("tan_validity", dt.timedelta(hours=2)),
        ("password_reset_validity", dt.timedelta(seconds=45)),
        ("password_reset_validity", dt.timedelta(days=2)),
    ],
)
def test_validities_named_in_minutes_must_be_whole_minutes(name: str, value: dt.timedelta) -> None:
    with pytest.raises(ValueError, match=f"{name} must be whole minutes from 1m to"):
        LoginSettings(**{name: value})  # type: ignore[arg-type]
    LoginSettings(**{name: dt.timedelta(minutes=1)})  # type: ignore[arg-type]
