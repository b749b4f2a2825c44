"""Issue 13 end to end in real headless Chromium: a head user logs in (password + the
authenticator app), creates an employee with two rights on "Benutzer"; the employee opens the
activation link from the real SMTP sink, sets a password, logs in, reaches a permitted
product and gets the clear page for the other."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway import RouteRule
from store import Level, User, UserStatus, transaction
from tests.conftest import FakeClock
from tests.logins.web.chrome import (
    BROWSER_TEST_MARKS,
    Chrome,
    nss_db,
    password_login,
    start_chrome,
    upstream_json,
)
from tests.logins.web.conftest import ROUTES
from tests.logins.web.firm_world import build_world, enrol_totp
from tests.logins.web.test_browser_email_change import enter_totp, readable

pytestmark = BROWSER_TEST_MARKS

ACTIVATION_LINK = re.compile(r"https://127\.0\.0\.1:\d+(/_gateway/activate/\S+)")
NEW_PASSWORD = "lange sichere passphrase fuer ilse"


async def test_head_user_creates_employee_who_activates_and_logs_in(
    gateway: Any,
    sessions: sessionmaker[Session],
    mailbox: Any,
    chromes: list[Chrome],
    screenshots: Path,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    # Until the 2FA deadline a basic login may press "Nicht jetzt" (the employee does).
    # Two product routes (issue 13): the employee gets DIP and ORV, not DIL.
    routes = (
        RouteRule(prefix="/antrag/dip", level=Level.BASIC, right="DIP"),
        RouteRule(prefix="/antrag/dil", level=Level.BASIC, right="DIL"),
        *ROUTES,
    )
    deadline = (clock() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    gw = await gateway(twofa_deadline=deadline, routes=routes)
    world = build_world(sessions, clock)
    head = start_chrome(home=tmp_path / "head", base=gw.url)
    chromes.append(head)
    nss_db(head.home, gw.tls.ca)

    # Strong: the password, then the authenticator app's code (set up before; the set-up
    # pages have their own Chromium test).
    secret = enrol_totp(sessions, world.email("ha"), clock)
    page = await password_login(head, world.email("ha"), "/_gateway/firm/users")
    assert 'id="f-code"' in page
    await enter_totp(head, secret, clock)

    # "Benutzer" in the account menu → the list → "Neuer Benutzer"
    await head.open("/_gateway/account")
    await head.click("nav.account-nav a[href$='/_gateway/firm/users']")
    text = await readable(head, screenshots / "firm-1-users.png")
    assert "Benutzer" in text and "User EA" in text and "Mitarbeiter" in text
    await head.click("a[href$='/_gateway/firm/users/new']")
    text = await readable(head, screenshots / "firm-2-new.png")
    assert "Neuer Benutzer" in text and "Rechte" in text
    await head.fill("f-name", "Ilse Vos")
    await head.fill("f-email", "ilse@example.org")
    for right in ("DIP", "ORV"):  # a checkbox: the page stays
        await head.run(lambda r=right: head.driver.find_element(By.ID, f"f-right-{r}").click())
    await head.click("form[action$='/_gateway/firm/users/new'] button[type=submit]")
    text = await readable(head, screenshots / "firm-3-created.png")
    assert "Aktivierungslink" in text and "Ilse Vos" in text and "Noch nicht aktiviert" in text
    with transaction(sessions) as s:
        ilse = s.scalar(select(User).where(User.email == "ilse@example.org"))
        assert ilse is not None and ilse.rights == ["DIP", "ORV"]
        assert ilse.status == UserStatus.PENDING

    # The employee: the activation link from the real mail, a password, the login.
    (mail,) = [m for m in await mailbox.deliver() if m["To"] == "ilse@example.org"]
    body = mail.get_body(preferencelist=("plain",)).get_content()
    link = ACTIVATION_LINK.search(body)
    assert link is not None, body
    employee = start_chrome(home=tmp_path / "employee", base=gw.url)
    chromes.append(employee)
    nss_db(employee.home, gw.tls.ca)
    await employee.open(link.group(1))
    await employee.fill("f-password", NEW_PASSWORD)
    await employee.fill("f-repeat", NEW_PASSWORD)
    await employee.click("form button[type=submit]")
    await readable(employee, screenshots / "firm-4-activated.png")
    page = await password_login(employee, "ilse@example.org", "/antrag", password=NEW_PASSWORD)
    assert "Nicht jetzt" in page
    page = await employee.click("button[value=not_now]")
    headers = upstream_json(page)["headers"]
    assert headers["x-brokergate-user-id"] == str(ilse.id)
    assert headers["x-brokergate-rights"] == "DIP,ORV"
    with transaction(sessions) as s:
        assert s.get(User, ilse.id).status == UserStatus.ACTIVE  # type: ignore[union-attr]

    # A permitted product reaches the portal; the other one is a clear page, not a bare 403.
    answer = upstream_json(await employee.open("/antrag/dip/offerte"))
    assert answer["path"] == "/antrag/dip/offerte"
    await employee.open("/antrag/dil/offerte")
    text = await readable(employee, screenshots / "firm-5-no-right.png")
    assert "Keine Berechtigung" in text
    assert "Für Direkt beginnende Leibrente haben Sie keine Berechtigung." in text
    assert "Ihr Hauptbenutzer User HA kann sie Ihnen geben." in text
