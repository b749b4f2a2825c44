""" "Konto aktivieren" on request through the real gateway (issue 14, seed 003): the answer is
byte-identical for every kind of account and for none, only a not yet activated account
with its broker number gets a mail, and used, expired and superseded links are refused
with one page that leads back to the request."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from store import User, UserStatus, transaction
from tests.conftest import FakeClock
from tests.logins.web.test_password_pages import set_password

LINK = re.compile(r"https://\S+/_gateway/activate/([A-Za-z0-9_-]+)")
NEW = "ein langes erstes Passwort 1"


def pending(make_user: Any, sessions: sessionmaker[Session], email: str, **kw: Any) -> int:
    uid: int = make_user(email=email, **kw).id
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None
        user.status, user.password_hash = UserStatus.PENDING, None
    return uid


async def ask(b: Any, email: str, broker: str) -> tuple[bytes, float]:
    status, _ = await b.get("/_gateway/activation/request")
    assert status == 200
    started = time.monotonic()
    status, _, _ = await b.post("/_gateway/activation/request", {"email": email, "broker": broker})
    assert status == 200
    return bytes(b.raw), time.monotonic() - started


async def test_the_answer_is_byte_identical_whatever_the_account(
    gateway: Any, browser_for: Any, make_user: Any, sessions: sessionmaker[Session], mailbox: Any
) -> None:
    gw = await gateway()
    pending(make_user, sessions, "neu@example.org", broker="60/123/4567")
    set_password(sessions, make_user(email="aktiv@example.org", broker="60/123/4568").id)
    disabled = pending(make_user, sessions, "gesperrt@example.org", broker="60/123/4569")
    with transaction(sessions) as s:
        user = s.get(User, disabled)
        assert user is not None
        user.status = UserStatus.DISABLED
    b = browser_for(gw)
    answers = {
        "pending account, its number": await ask(b, "neu@example.org", "60/123/4567"),
        "pending account, another number": await ask(b, "neu@example.org", "60/999/9999"),
        "no such account": await ask(b, "niemand@example.org", "60/123/4567"),
        "activated account": await ask(b, "aktiv@example.org", "60/123/4568"),
        "disabled account": await ask(b, "gesperrt@example.org", "60/123/4569"),
        "not an address": await ask(b, "kein-at-zeichen", "60/123/4567"),
        "not a broker number": await ask(b, "neu@example.org", "abc"),
    }
    first = answers["pending account, its number"][0]
    assert "noch nicht aktivierter Zugang" in first.decode()
    for what, (body, seconds) in answers.items():
        assert body == first, f"the answer for '{what}' differs"  # byte for byte
        assert seconds >= 0.4, f"'{what}' answered faster than the floor"
    assert "neu@example.org" not in first.decode()  # nothing typed is echoed
    messages = await mailbox.deliver()
    assert [m["To"] for m in messages] == ["neu@example.org"]  # one mail, to the pending one


async def test_used_expired_and_superseded_links_are_refused(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    clock: FakeClock,
) -> None:
    gw = await gateway()
    pending(make_user, sessions, "neu@example.org", broker="60/123/4567")
    b = browser_for(gw)

    async def mailed_token() -> str:
        await ask(b, "neu@example.org", "60/123/4567")
        link = LINK.search(await mailbox.last_text())
        assert link is not None
        return link.group(1)

    async def refused(token: str) -> str:
        status, body = await b.get(f"/_gateway/activate/{token}")
        assert status == 404 and "Dieser Aktivierungslink ist nicht mehr gültig" in body
        assert 'href="/_gateway/activation/request"' in body  # ask for a new one right here
        assert "Neuen Aktivierungslink anfordern" in body and 'name="password"' not in body
        return body.replace(token, "TOKEN")  # the language switch links back to this path

    expired = await mailed_token()
    clock.advance(timedelta(days=7))  # activation_validity
    expired_page = await refused(expired)

    superseded = await mailed_token()
    clock.advance(timedelta(minutes=1))
    current = await mailed_token()  # the newer link voids the older one
    assert current != superseded
    superseded_page = await refused(superseded)
    unknown_page = await refused("x" * 43)

    status, body = await b.get(f"/_gateway/activate/{current}")
    assert status == 200 and "neu@example.org" in body
    status, body, _ = await b.post(
        f"/_gateway/activate/{current}", {"password": NEW, "repeat": NEW}
    )
    assert status == 200 and "Zugang aktiviert" in body
    used_page = await refused(current)
    # One page for every reason: it does not tell which links ever existed.
    assert expired_page == superseded_page == unknown_page == used_page
    status, _, _ = await b.post(f"/_gateway/activate/{current}", {"password": NEW, "repeat": NEW})
    assert status == 404  # the used link sets nothing a second time
