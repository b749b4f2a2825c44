""" "Passwort vergessen?" through the real gateway (issue 14): byte-identical answers for
existing and unknown addresses, the link from the real SMTP sink, the password rules, other
sessions ended, used links refused, and the second factor still asked for afterwards."""

from __future__ import annotations

import re
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from store import User, UserStatus, transaction
from tests.conftest import FakeClock
from tests.logins.web.test_password_pages import PASSWORD, login, set_password

NEW = "ein ganz neues Passwort 2026"
LINK = re.compile(r"https://\S+/_gateway/password/reset/([A-Za-z0-9_-]+)")


async def ask(b: Any, email: str) -> tuple[int, bytes, float]:
    await b.get("/_gateway/password/forgot")
    started = time.monotonic()
    status, _, _ = await b.post("/_gateway/password/forgot", {"email": email})
    return status, b.raw, time.monotonic() - started


async def test_the_answer_is_the_same_for_existing_and_unknown_addresses(
    gateway: Any, browser_for: Any, make_user: Any, mailbox: Any
) -> None:
    gw = await gateway()
    make_user(email="anna@example.org", broker="60/123/4567")
    b = browser_for(gw)
    _status, body = await b.get("/_gateway/login/password")
    assert 'href="/_gateway/password/forgot"' in body and "Passwort vergessen?" in body
    known = await ask(b, "anna@example.org")
    unknown = await ask(b, "nobody@example.org")
    assert known[0] == unknown[0] == 200
    assert known[1] == unknown[1]  # byte for byte
    assert "Wenn zu dieser Adresse ein Zugang gehört" in known[1].decode()
    assert "anna@example.org" not in known[1].decode()
    assert min(known[2], unknown[2]) >= 0.4  # the floor hides the extra writes
    assert len(await mailbox.deliver()) == 1


async def test_reset_with_the_mailed_link_ends_sessions_and_keeps_the_second_factor(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    mailbox: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    gw = await gateway()
    uid = make_user(email="anna@example.org", broker="60/123/4567", name="Anna Muster").id
    set_password(sessions, uid)
    other = browser_for(gw)
    assert (await login(other, "anna@example.org"))[0] == 303
    assert (await other.get("/antrag", follow=False))[0] == 200

    b = browser_for(gw)
    await ask(b, "anna@example.org")
    await ask(b, "anna@example.org")  # the newer link voids the first
    messages = await mailbox.deliver()
    first, second = (
        LINK.search(str(m.get_body(preferencelist=("plain",)).get_content())) for m in messages
    )
    assert first is not None and second is not None
    status, body = await b.get(f"/_gateway/password/reset/{first.group(1)}")
    assert status == 404 and "abgelaufen oder wurde durch einen neueren ersetzt" in body
    token = second.group(1)
    status, body = await b.get(f"/_gateway/password/reset/{token}")
    assert status == 200 and "Neues Passwort festlegen" in body and "anna@example.org" in body
    status, body, _ = await b.post(
        f"/_gateway/password/reset/{token}", {"password": "kurz", "repeat": "kurz"}
    )
    assert status == 400
    await b.get(f"/_gateway/password/reset/{token}")
    status, body, _ = await b.post(
        f"/_gateway/password/reset/{token}", {"password": NEW, "repeat": NEW}
    )
    assert status == 200 and "Ihr neues Passwort ist gespeichert" in body
    notice = await mailbox.last_text()
    assert "Alle anderen Anmeldungen wurden beendet" in notice
    # The other browser was logged out; the used link is refused.
    status, _ = await other.get("/antrag", follow=False)
    assert status == 401  # the login page: its session ended
    status, body = await b.get(f"/_gateway/password/reset/{token}")
    assert status == 404 and "bereits verwendet" in body
    # The old password no longer works, the new one does.
    fresh = browser_for(gw)
    assert (await login(fresh, "anna@example.org", PASSWORD))[0] == 401
    assert (await login(fresh, "anna@example.org", NEW))[0] == 303

    # With an authenticator app set up, the reset does not skip it.
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None
        user.totp_confirmed_at = clock()
    await ask(b, "anna@example.org")
    again = LINK.search(await mailbox.last_text())
    assert again is not None
    await b.get(f"/_gateway/password/reset/{again.group(1)}")
    newer = NEW + " und mehr"
    await b.post(f"/_gateway/password/reset/{again.group(1)}", {"password": newer, "repeat": newer})
    third = browser_for(gw)
    status, _, response = await login(third, "anna@example.org", newer)
    assert status == 303 and "/_gateway/login/second-factor" in response.headers["Location"]


async def test_activation_on_request_answers_the_same_and_mails_a_working_link(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    mailbox: Any,
    sessions: sessionmaker[Session],
) -> None:
    gw = await gateway()
    uid = make_user(email="neu@example.org", broker="60/123/4567", name="Nina Neu").id
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None
        user.status, user.password_hash = UserStatus.PENDING, None
    b = browser_for(gw)
    _status, body = await b.get("/_gateway/login/password")
    assert 'href="/_gateway/activation/request"' in body

    async def request(email: str, broker: str) -> bytes:
        await b.get("/_gateway/activation/request")
        status, _, _ = await b.post(
            "/_gateway/activation/request", {"email": email, "broker": broker}
        )
        assert status == 200
        return bytes(b.raw)

    known = await request("neu@example.org", "60/123/4567")
    wrong_number = await request("neu@example.org", "60/999/9999")
    assert known == wrong_number  # byte for byte
    assert "noch nicht aktivierter Zugang" in known.decode()
    text = await mailbox.last_text()
    link = re.search(r"https://\S+/_gateway/activate/([A-Za-z0-9_-]+)", text)
    assert link is not None and len(await mailbox.deliver()) == 1
    status, body = await b.get(f"/_gateway/activate/{link.group(1)}")
    assert status == 200 and "neu@example.org" in body
