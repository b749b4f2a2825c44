"""Issue 16 point 8: the step-up page that asks for a second factor offered the TAN login,
which can only reach ``basic``; it lists only the ways that reach the level it asks for."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tests.logins.web.test_password_pages import login, set_password

TAN_LINK = 'href="/_gateway/login/broker'
PASSWORD_LINK = 'href="/_gateway/login/password?next='
PASSKEY_LINK = 'href="/_gateway/login/passkey?next='


async def test_the_step_up_page_lists_only_ways_that_reach_the_level(
    gateway: Any, browser_for: Any, make_user: Any, sessions: sessionmaker[Session]
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    status, body = await b.get("/_gateway/step-up?level=strong&next=/vertrag")
    assert status == 200 and "Zwei-Faktor-Anmeldung" in body
    assert PASSWORD_LINK in body and PASSKEY_LINK in body and TAN_LINK not in body
    status, body = await b.get("/_gateway/step-up?level=basic&next=/antrag")
    assert TAN_LINK in body and PASSWORD_LINK in body  # the TAN login reaches basic
    # The page answered for a portal path: a basic (password) session on a strong route.
    set_password(sessions, make_user(email="stefan@example.org").id)
    await login(b, "stefan@example.org")
    status, body = await b.get("/vertrag")
    assert status == 403 and "Zusätzliche Anmeldung erforderlich" in body
    assert PASSWORD_LINK in body and TAN_LINK not in body
