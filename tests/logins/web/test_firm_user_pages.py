"""The head users' "Users" pages (issue 13, seed 003 "Gebruikers"): the list, a new user with
the activation mail, edit (name, rights, the email by the email-change rules), deactivate /
reactivate (sessions end at once), the activation mail again; strong and fresh logins, CSRF,
field errors with the typed values kept, de/en/nl, audited."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority, set_office_active
from gateway.web._formatting import format_date
from store import (
    AuditEvent,
    EmailChangeToken,
    MailOutbox,
    Office,
    RevocationReason,
    User,
    UserStatus,
    transaction,
)
from tests.conftest import FakeClock
from tests.logins.web.firm_world import build_world, snapshot, strong_login
from tests.logins.web.test_password_pages import login

USERS = "/_gateway/firm/users"


def _user(sessions: sessionmaker[Session], **where: Any) -> User | None:
    with transaction(sessions) as s:
        user = s.scalar(select(User).filter_by(**where))
        if user is not None:
            s.expunge(user)
        return user


def _mails(sessions: sessionmaker[Session], template: str) -> list[MailOutbox]:
    with transaction(sessions) as s:
        rows = list(s.scalars(select(MailOutbox).where(MailOutbox.template == template)))
        for row in rows:
            s.expunge(row)
        return rows


def _audit(sessions: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with transaction(sessions) as s:
        rows = list(s.scalars(select(AuditEvent).where(AuditEvent.action == action)))
        for row in rows:
            s.expunge(row)
        return rows


async def test_list_shows_the_seed_columns_grouped_by_office(
    gateway: Any, browser_for: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    b = browser_for(gw)
    await strong_login(b, world.email("ha"), clock, sessions)
    status, body = await b.get(USERS)
    assert status == 200
    for text in ("Name", "E-Mail", "Rolle", "Status", "DIP", "DIL", "ORV", "Zertifikat"):
        assert f">{text}<" in body or f">{text}</abbr>" in body, text
    assert "Hauptbenutzer" in body and "Mitarbeiter" in body and "Aktiv" in body
    # grouped by office, the head office first
    assert body.index("60/100/0001") < body.index("Office S1") < body.index("Office S2")
    assert "keines" in body  # no certificate yet
    # S2 has DIP only: its head user's row has one check mark
    row = re.search(r"User S2H.*?</tr>", body, re.S)
    assert row is not None and row.group(0).count("✓") == 1
    # the menu: "Benutzer" and "Unterbüros" for the head office's head user
    assert f'href="{USERS}">Benutzer</a>' in body and "Unterbüros</a>" in body


async def test_menu_for_sub_office_head_and_employee(
    gateway: Any, browser_for: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    sub = browser_for(gw)
    await strong_login(sub, world.email("s1h"), clock, sessions)
    _, body = await sub.get("/_gateway/account")
    assert f'href="{USERS}">Benutzer</a>' in body and "Unterbüros" not in body
    employee = browser_for(gw, language="nl")
    await login(employee, world.email("ea"))
    _, body = await employee.get("/_gateway/account")
    assert "Mijn account" in body and "Gebruikers" not in body


async def test_needs_strong_then_fresh_login(
    gateway: Any,
    browser_for: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    login_settings: Any,
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    b = browser_for(gw)
    await login(b, world.email("ha"))  # password only: basic
    async with b.client.get(gw.url + USERS, allow_redirects=False) as r:
        assert r.status == 303 and "level=strong" in r.headers["Location"]
        assert r.headers["Location"].startswith("/_gateway/step-up?")
    await strong_login(b, world.email("ha"), clock, sessions)
    status, _ = await b.get(f"{USERS}/new")
    assert status == 200
    csrf = b.csrf()
    clock.advance(login_settings.fresh_login + timedelta(seconds=1))
    status, _ = await b.get(USERS, follow=False)
    assert status == 200  # the list needs strong, not fresh
    before = snapshot(sessions)
    form = {"csrf": csrf, "name": "Neu", "email": "neu@example.org", "right": "DIP"}
    form["office"] = str(world.offices["HA"])
    status, _, response = await b.post(f"{USERS}/new", form, follow=False)
    assert status == 303 and response.headers["Location"].startswith("/_gateway/reauth?next=")
    assert "level=strong" in response.headers["Location"]
    assert snapshot(sessions) == before


async def test_new_user_validation_keeps_values_then_creates_and_mails(
    gateway: Any,
    browser_for: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    mailbox: Any,
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    b = browser_for(gw, language="en")
    await strong_login(b, world.email("ha"), clock, sessions)
    status, body = await b.get(f"{USERS}/new")
    assert status == 200 and "New user" in body and 'name="right" value="ORV"' in body
    office = str(world.offices["S2"])  # DIP only
    before = snapshot(sessions)
    status, body, _ = await b.post(
        f"{USERS}/new", {"name": "  ", "email": "not-an-address", "office": office}
    )
    assert status == 400
    assert "Please enter a name." in body and "This email address is not valid" in body
    assert 'value="not-an-address"' in body  # the typed value kept
    status, body, _ = await b.post(
        f"{USERS}/new", {"name": "Ilse", "email": "EA@example.org", "office": office}
    )
    assert status == 400 and "already belongs to another access" in body
    assert 'value="Ilse"' in body
    status, body, _ = await b.post(
        f"{USERS}/new",
        {"name": "Ilse", "email": "ilse@example.org", "office": office, "right": "ORV"},
    )
    assert status == 400 and "Choose only products available to the office." in body
    status, _, _ = await b.post(
        f"{USERS}/new", {"name": "Ilse", "email": "ilse@example.org", "office": office}, csrf=False
    )
    assert status == 403
    assert snapshot(sessions) == before

    status, body, _ = await b.post(
        f"{USERS}/new",
        {"name": "Ilse  Vos", "email": "Ilse@Example.org", "office": office, "right": "DIP"},
    )
    assert status == 200 and "activation link" in body
    ilse = _user(sessions, email="ilse@example.org")
    assert ilse is not None and ilse.name == "Ilse Vos" and ilse.status == UserStatus.PENDING
    assert ilse.office_id == world.offices["S2"] and ilse.rights == ["DIP"]
    assert ilse.locale == "en"  # the head user's page language
    (mail,) = _mails(sessions, "activation")
    assert mail.to_addr == "ilse@example.org" and mail.locale == "en"
    text = await mailbox.last_text()
    assert "/_gateway/activate/" in text
    added = _audit(sessions, "user.add")[-1]
    assert added.actor == f"user:{world.users['ha']}" and added.client_addr == "127.0.0.1"
    (sent,) = _audit(sessions, "user.activation.sent")
    assert sent.client_addr == "127.0.0.1"
    status, body = await b.get(USERS)
    assert "Ilse Vos" in body and "Not yet activated" in body


async def test_edit_name_rights_and_email_by_the_email_change_rules(
    gateway: Any, browser_for: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    b = browser_for(gw)
    await strong_login(b, world.email("ha"), clock, sessions)
    uid = world.users["s1e"]
    status, body = await b.get(f"{USERS}/{uid}")
    assert status == 200 and 'value="User S1E"' in body and 'value="s1e@example.org"' in body
    assert 'value="ORV" disabled' in body  # S1 has DIP and DIL only
    status, body, _ = await b.post(
        f"{USERS}/{uid}", {"name": "", "email": "s1e@example.org", "right": "DIP"}
    )
    assert status == 400 and "Bitte geben Sie einen Namen ein." in body
    status, body, _ = await b.post(
        f"{USERS}/{uid}", {"name": "Sanne", "email": "s1e@example.org", "right": "ORV"}
    )
    assert status == 400 and "Wählen Sie nur Produkte" in body and 'value="Sanne"' in body
    status, body, _ = await b.post(
        f"{USERS}/{uid}", {"name": "Sanne de Vries", "email": "s1e@example.org", "right": "DIL"}
    )
    assert status == 200 and "Die Änderungen wurden gespeichert." in body
    user = _user(sessions, id=uid)
    assert user is not None and user.name == "Sanne de Vries" and user.rights == ["DIL"]
    assert _audit(sessions, "user.rights") and _audit(sessions, "user.name")
    # the email: a link to the new address, a notice to the old one; no change until confirmed
    status, body, _ = await b.post(
        f"{USERS}/{uid}", {"name": "Sanne de Vries", "email": "sanne@example.org", "right": "DIL"}
    )
    assert status == 200 and "sobald der Benutzer sie über den Link bestätigt" in body
    assert [m.to_addr for m in _mails(sessions, "email_change_confirm")] == ["sanne@example.org"]
    assert [m.to_addr for m in _mails(sessions, "email_change_notice")] == ["s1e@example.org"]
    user = _user(sessions, id=uid)
    assert user is not None and user.email == "s1e@example.org"
    with transaction(sessions) as s:
        assert s.scalar(select(EmailChangeToken.new_email)) == "sanne@example.org"
    (requested,) = _audit(sessions, "user.email.change_requested")
    assert requested.actor == f"user:{world.users['ha']}" and requested.client_addr
    status, body, _ = await b.post(
        f"{USERS}/{uid}", {"name": "Sanne de Vries", "email": "hb@example.org", "right": "DIL"}
    )
    assert status == 400 and "gehört bereits zu einem anderen Zugang" in body


async def test_deactivate_ends_sessions_at_once_and_reactivate(
    gateway: Any, browser_for: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    employee = browser_for(gw)
    await login(employee, world.email("ea"))
    status, _ = await employee.get("/_gateway/account")
    assert status == 200
    b = browser_for(gw)
    await strong_login(b, world.email("ha"), clock, sessions)
    uid = world.users["ea"]
    await b.get(f"{USERS}/{uid}")
    status, body, _ = await b.post(f"{USERS}/{uid}/deactivate", {})
    assert status == 200 and "überall abgemeldet" in body and "Inaktiv" in body
    assert _user(sessions, id=uid).status == UserStatus.DISABLED  # type: ignore[union-attr]
    async with employee.client.get(gw.url + "/_gateway/account", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"].startswith("/_gateway/login")
    assert _audit(sessions, "user.deactivate")
    # a head user cannot lock themselves out
    own = world.users["ha"]
    await b.get(f"{USERS}/{own}")
    assert "Deaktivieren" not in b.last.split("<h1>", 1)[1]
    status, body, _ = await b.post(f"{USERS}/{own}/deactivate", {})
    assert status == 400 and "eigenen Zugang nicht deaktivieren" in body
    await b.get(f"{USERS}/{uid}")
    status, body, _ = await b.post(f"{USERS}/{uid}/reactivate", {})
    assert status == 200 and "wieder aktiv" in body
    assert _user(sessions, id=uid).status == UserStatus.ACTIVE  # type: ignore[union-attr]
    assert _audit(sessions, "user.reactivate")


async def test_activation_mail_again_only_while_not_activated(
    gateway: Any, browser_for: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    b = browser_for(gw, language="nl")
    await strong_login(b, world.email("ha"), clock, sessions)
    await b.get(f"{USERS}/new")
    await b.post(
        f"{USERS}/new",
        {"name": "Nick", "email": "nick@example.org", "office": str(world.offices["HA"])},
    )
    nick = _user(sessions, email="nick@example.org")
    assert nick is not None
    status, body = await b.get(f"{USERS}/{nick.id}")
    assert status == 200 and "Activatiemail opnieuw sturen" in body
    status, body, _ = await b.post(f"{USERS}/{nick.id}/activation", {})
    assert status == 200 and "nieuwe activatielink" in body
    mails = _mails(sessions, "activation")
    assert [m.to_addr for m in mails] == ["nick@example.org"] * 2
    assert {m.locale for m in mails} == {"nl"}
    uid = world.users["ea"]  # active with a password
    status, body = await b.get(f"{USERS}/{uid}")
    assert "Activatiemail opnieuw sturen" not in body
    status, body, _ = await b.post(f"{USERS}/{uid}/activation", {})
    assert status == 400 and "al geactiveerd" in body
    assert len(_mails(sessions, "activation")) == 2


async def test_list_shows_certificate_status_and_expiry_in_local_dates(
    gateway: Any,
    browser_for: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    authority: CertificateAuthority,
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    valid = authority.issue_certificate(world.users["ea"], "test")
    revoked = authority.issue_certificate(world.users["s1e"], "test")
    authority.revoke(revoked.serial, RevocationReason.KEY_COMPROMISE, "test")
    b = browser_for(gw, language="en")
    await strong_login(b, world.email("ha"), clock, sessions)
    _, body = await b.get(USERS)
    until = format_date(valid.not_after, "en", ZoneInfo("Europe/Berlin"))
    row = re.search(r"User EA.*?</tr>", body, re.S)
    assert row is not None and f"valid until {until}" in row.group(0)
    row = re.search(r"User S1E.*?</tr>", body, re.S)
    revoked_on = format_date(clock(), "en", ZoneInfo("Europe/Berlin"))
    assert row is not None and f"revoked on {revoked_on}" in row.group(0)
    row = re.search(r"User HA.*?</tr>", body, re.S)
    assert row is not None and ">none<" in row.group(0)


async def test_no_new_user_in_an_inactive_office(
    gateway: Any, browser_for: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    with transaction(sessions) as s:
        office = s.get(Office, world.offices["S2"])
        assert office is not None
        set_office_active(s, office, False, now=clock(), actor="test")
    b = browser_for(gw, language="en")
    await strong_login(b, world.email("ha"), clock, sessions)
    status, body = await b.get(f"{USERS}/new")
    assert status == 200 and "S2-1 · Office S2" not in body  # not offered
    before = snapshot(sessions)
    form = {"name": "Late", "email": "late@example.org", "office": str(world.offices["S2"])}
    status, body, _ = await b.post(f"{USERS}/new", form)
    assert status == 400 and "This office is deactivated" in body
    assert snapshot(sessions) == before
