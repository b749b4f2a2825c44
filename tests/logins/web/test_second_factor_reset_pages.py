"""After ``brokergate user reset-2fa`` (the real console script, on the gateway's own store):
the broker's open session is gone, the password alone logs in at ``basic`` and leads to the
2FA set-up, and the notice arrives through the real SMTP sink (issue 14)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import TOTP_PURPOSE, begin_enrolment, confirm_enrolment
from store import Sealer
from tests.conftest import TEST_SECRET_KEY, CliRunner, FakeClock
from tests.logins.web.test_password_pages import login, set_password
from tests.polling import async_wait_for


async def test_after_the_reset_the_password_leads_to_the_2fa_set_up(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    mailbox: Any,
    run_cli: CliRunner,
    db_url: str,
) -> None:
    clock.now = datetime.now(UTC)  # the CLI writes with the real clock
    deadline = clock() + timedelta(days=30)
    gw = await gateway(twofa_deadline=deadline.strftime("%Y-%m-%dT%H:%M:%SZ"))
    uid = make_user(email="anna@example.org", name="Anna Muster").id
    set_password(sessions, uid)
    sealer = Sealer(secret=TEST_SECRET_KEY, purpose=TOTP_PURPOSE)
    enrolment = begin_enrolment(sessions, user_id=uid, sealer=sealer, issuer="b", now=clock())
    confirm_enrolment(
        sessions,
        user_id=uid,
        code=pyotp.TOTP(enrolment.secret).at(clock()),
        sealer=sealer,
        now=clock(),
    )
    clock.advance(timedelta(minutes=1))
    b = browser_for(gw)
    status, _, response = await login(b, "anna@example.org", next_path="/vertrag")
    assert response.headers["Location"] == "/_gateway/login/second-factor?next=%2Fvertrag"
    await b.get("/_gateway/login/second-factor?next=/vertrag")
    await b.post(
        "/_gateway/login/second-factor",
        {"code": pyotp.TOTP(enrolment.secret).at(clock()), "next": "/vertrag"},
        follow=False,
    )
    status, body = await b.get("/vertrag")
    assert status == 200 and json.loads(body)["headers"]["x-brokergate-level"] == "strong"

    result = run_cli(
        "user",
        "reset-2fa",
        "anna@example.org",
        env={"BROKERGATE_STORE__URL": db_url, "BROKERGATE_GATEWAY__PUBLIC_URL": gw.url},
    )
    assert result.code == 0, result.err
    assert "1 session(s) ended" in result.out

    async def vertrag_status() -> int:
        return (await b.get("/vertrag", follow=False))[0]

    # The gateway learns of the ended session at its next refresh (≤ 2 s).
    await async_wait_for(
        vertrag_status, until=lambda s: s == 401, timeout=10, message="session not ended"
    )

    # The password alone now logs in (basic) and the 2FA prompt offers the set-up.
    clock.advance(timedelta(minutes=1))
    fresh = browser_for(gw)
    status, _, response = await login(fresh, "anna@example.org")
    assert status == 303 and response.headers["Location"] == "/_gateway/2fa/prompt?next=%2Fantrag"
    status, body = await fresh.get("/_gateway/2fa/prompt?next=/antrag")
    assert status == 200 and "Aktivierung starten" in body
    status, body = await fresh.get("/antrag")
    headers = json.loads(body)["headers"]
    assert headers["x-brokergate-level"] == "basic" and headers["x-brokergate-method"] == "password"
    status, body = await fresh.get("/_gateway/account/totp")
    assert status == 200 and 'id="totp-key"' in body  # the set-up starts afresh

    notice = await mailbox.last_text()
    assert "Zwei-Faktor-Anmeldung Ihres Zugangs zum Maklerportal zurückgesetzt" in notice
    assert "/_gateway/account" in notice and "Haben Sie das nicht veranlasst" in notice
