""" "Überall abmelden" with the tick "Auch gespeicherte Browser vergessen" (issue 14): without
the tick the remembered browsers stay, with it they are forgotten (audited) together with
ending every session; a restricted session can do neither for the broker."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import remember_device
from store import AuditEvent, RememberedDevice, transaction
from tests.conftest import FakeClock
from tests.logins.web.test_password_pages import login, set_password
from tests.polling import async_wait_for

TICK = 'name="forget_devices" type="checkbox" value="yes"'


def remembered(sessions: sessionmaker[Session], clock: FakeClock, uid: int, n: int) -> None:
    with transaction(sessions) as s:
        for _ in range(n):
            remember_device(
                s, user_id=uid, label="Firefox", validity=timedelta(days=30), now=clock()
            )


def live_devices(sessions: sessionmaker[Session], uid: int) -> int:
    with transaction(sessions) as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(RememberedDevice)
                .where(RememberedDevice.user_id == uid, RememberedDevice.revoked_at.is_(None))
            )
            or 0
        )


def device_revocations(sessions: sessionmaker[Session]) -> list[tuple[str, dict[str, Any]]]:
    with transaction(sessions) as s:
        return [
            (e.actor, e.details)
            for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "device.revoke"))
        ]


async def test_the_tick_decides_whether_remembered_browsers_are_forgotten(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    gw = await gateway()
    uid = make_user(email="anna@example.org", broker="60/123/4567").id
    set_password(sessions, uid)
    remembered(sessions, clock, uid, 2)

    # Without the tick: every session ends, the remembered browsers stay.
    b, other = browser_for(gw), browser_for(gw)
    await login(b, "anna@example.org")
    await login(other, "anna@example.org")
    status, body = await b.get("/_gateway/account")
    assert status == 200 and TICK in body
    assert "Auch gespeicherte Browser vergessen" in body
    assert '<label for="f-forget-devices">' in body and 'id="f-forget-devices"' in body
    status, body, _ = await b.post("/_gateway/logout-everywhere", {})
    assert status == 200 and "ebenfalls vergessen" not in body
    assert live_devices(sessions, uid) == 2 and device_revocations(sessions) == []

    async def other_status() -> int:
        return (await other.get("/antrag", follow=False))[0]

    await async_wait_for(other_status, until=lambda s: s == 401, timeout=10, message="not ended")

    # With the tick: the sessions end and the browsers are forgotten, audited.
    await login(b, "anna@example.org")
    await login(other, "anna@example.org")
    await b.get("/_gateway/account")
    status, body, _ = await b.post("/_gateway/logout-everywhere", {"forget_devices": "yes"})
    assert status == 200 and "Ihre gespeicherten Browser wurden ebenfalls vergessen." in body
    assert live_devices(sessions, uid) == 0
    assert device_revocations(sessions) == [(f"user:{uid}", {"count": 2})]
    assert (await b.get("/antrag", follow=False))[0] == 401
    await async_wait_for(other_status, until=lambda s: s == 401, timeout=10, message="not ended")

    # Nothing remembered: no tick to offer.
    await login(b, "anna@example.org")
    status, body = await b.get("/_gateway/account")
    assert status == 200 and TICK not in body
    status, body, _ = await b.post("/_gateway/logout", {})  # the same page, without the line
    assert status == 200 and "ebenfalls vergessen" not in body


@pytest.mark.parametrize("language", ["en", "nl"])
async def test_the_tick_speaks_the_brokers_language(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    language: str,
) -> None:
    gw = await gateway()
    uid = make_user(email="anna@example.org", broker="60/123/4567").id
    set_password(sessions, uid)
    remembered(sessions, clock, uid, 1)
    b = browser_for(gw, language=language)
    await login(b, "anna@example.org")
    _status, body = await b.get("/_gateway/account")
    label, done = {
        "en": ("Also forget remembered browsers", "forgotten as well"),
        "nl": ("Ook onthouden browsers vergeten", "zijn ook vergeten"),
    }[language]
    assert label in body
    _status, body, _ = await b.post("/_gateway/logout-everywhere", {"forget_devices": "yes"})
    assert done in body


async def test_a_restricted_session_cannot_forget_the_brokers_browsers(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    gw = await gateway()
    uid = make_user(email="anna@example.org", broker="60/123/4567").id
    set_password(sessions, uid)
    remembered(sessions, clock, uid, 1)
    stranger = browser_for(gw)
    await stranger.get("/_gateway/login/broker")
    await stranger.post(
        "/_gateway/login/broker/restricted",
        {"broker": "60/123/4567", "email": "", "next": "/rechner"},
    )
    status, body = await stranger.get("/rechner")
    assert json.loads(body)["headers"]["x-brokergate-level"] == "restricted"
    await stranger.get("/_gateway/login/broker")
    status, _, _ = await stranger.post("/_gateway/logout-everywhere", {"forget_devices": "yes"})
    assert status == 200
    assert live_devices(sessions, uid) == 1 and device_revocations(sessions) == []
