"""The pure side of the idle logout notice (issue 16): which ended sessions are marked."""

from __future__ import annotations

import datetime as dt

from gateway.auth._certificate_identity import UserRecord
from gateway.auth._resolution import resolve_request
from gateway.auth._session_rules import (
    ENDED_FOR_INACTIVITY,
    SessionState,
    ended_for_inactivity,
    touch_interval_for,
)
from store import Level, UserStatus

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
IDLE = dt.timedelta(minutes=15)


def _state(
    *, user_id: int | None, level: Level, last_seen: dt.datetime, **kw: object
) -> SessionState:
    values: dict[str, object] = {
        "id": "s1",
        "user_id": user_id,
        "level": level,
        "method": "password",
        "created_at": NOW - dt.timedelta(hours=1),
        "authenticated_at": NOW - dt.timedelta(hours=1),
        "last_seen_at": last_seen,
        "absolute_expires_at": NOW + dt.timedelta(hours=11),
        "cert_fingerprint": None,
        "client_addr": None,
        "csrf_token": "t",
        "twofa_prompt_dismissed": False,
        "data": {},
        "ended_at": None,
        **kw,
    }
    return SessionState(**values)  # type: ignore[arg-type]


def _resolve(session: SessionState) -> bool:
    user = UserRecord(
        id=7,
        email="a@example.org",
        name="A",
        locale="de",
        status=UserStatus.ACTIVE,
        broker_number="60/123/4567",
    )
    resolution = resolve_request(
        certificate=None,
        session=session,
        session_user=user if session.user_id is not None else None,
        certificate_session=None,
        path="/antrag",
        now=NOW,
        idle_timeout=IDLE,
        touch_interval=touch_interval_for(IDLE),
        inactivity_exempt_paths=(),
        certificate_requires_password=False,
    )
    assert resolution.end is session and resolution.session is None
    return resolution.idle_logout


def test_an_idle_login_is_marked_and_nothing_else_is() -> None:
    old = NOW - dt.timedelta(minutes=16)
    assert _resolve(_state(user_id=7, level=Level.BASIC, last_seen=old))
    assert _resolve(_state(user_id=7, level=Level.RESTRICTED, last_seen=old))
    # a pre-login session (a login form's CSRF token) going idle is no logout
    assert not _resolve(_state(user_id=None, level=Level.ANONYMOUS, last_seen=old))
    # past the absolute end: ended, but not for inactivity
    expired = _state(
        user_id=7, level=Level.BASIC, last_seen=NOW, absolute_expires_at=NOW - dt.timedelta(1)
    )
    assert not _resolve(expired)


def test_only_the_mark_on_an_ended_row_counts() -> None:
    marked = _state(
        user_id=7, level=Level.BASIC, last_seen=NOW, ended_at=NOW, data=dict(ENDED_FOR_INACTIVITY)
    )
    assert ended_for_inactivity(marked)
    assert not ended_for_inactivity(
        _state(user_id=7, level=Level.BASIC, last_seen=NOW, ended_at=NOW)
    )
    # a live session carrying the same data (it cannot, but) is not "ended for inactivity"
    live = _state(user_id=7, level=Level.BASIC, last_seen=NOW, data=dict(ENDED_FOR_INACTIVITY))
    assert not ended_for_inactivity(live)
