"""The head office's "Sub-offices" pages (issue 13, seed 003 "Subkantoren"): list, new (all
the seed's fields, optionally the activation link to the office), edit, deactivate (its
users' sessions end) / reactivate, delete only while none of its users has logged in."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store import AuditEvent, MailOutbox, Office, User, UserRole, UserStatus, transaction
from tests.conftest import FakeClock
from tests.logins.web.firm_world import build_world, snapshot, strong_login
from tests.logins.web.test_password_pages import login

OFFICES = "/_gateway/firm/offices"
NEW = {
    "name": "Kantoor Noord",
    "number": "N-7",
    "address": "Dorpsstraat 1",
    "postcode": "1234 AB",
    "city": "Groningen",
    "phone": "050 123 45 67",
    "email": "noord@offices.example.org",
    "right": "DIP",
}


def _office(sessions: sessionmaker[Session], **where: Any) -> Office | None:
    with transaction(sessions) as s:
        office = s.scalar(select(Office).filter_by(**where))
        if office is not None:
            s.expunge(office)
        return office


async def test_list_and_new_sub_office_with_activation_link(
    gateway: Any,
    browser_for: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    mailbox: Any,
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    b = browser_for(gw, language="nl")
    await strong_login(b, world.email("ha"), clock, sessions)
    status, body = await b.get(OFFICES)
    assert status == 200 and "Subkantoren" in body and "Office S1" in body and "S1-1" in body
    status, body = await b.get(f"{OFFICES}/new")
    assert status == 200 and "Nieuw subkantoor aanmaken" in body
    for label in ("Adres", "Plaats", "E-mailadres", "Naam", "Postcode", "Telefoon", "Nummer"):
        assert f">{label}</label>" in body, label
    assert "Zend e-mail met activatielink naar subkantoor" in body
    before = snapshot(sessions)
    status, body, _ = await b.post(
        f"{OFFICES}/new", {**NEW, "number": "S1-1", "email": "s2@offices.example.org"}
    )
    assert status == 400
    assert "Een ander kantoor van uw firma heeft dit nummer al." in body
    assert "al in gebruik bij een ander kantoor" in body and 'value="Groningen"' in body
    status, body, _ = await b.post(f"{OFFICES}/new", {**NEW, "name": "", "email": "x"})
    assert status == 400 and "Vul de naam van het kantoor in." in body and "ongeldig" in body
    status, body, _ = await b.post(
        f"{OFFICES}/new", {**NEW, "email": "ea@example.org", "send_activation": "1"}
    )
    assert status == 400 and "logt al een gebruiker in" in body
    # the ca layer's format rules, next to their fields
    status, body, _ = await b.post(f"{OFFICES}/new", {**NEW, "phone": "bel me maar"})
    assert status == 400 and "Dit telefoonnummer is ongeldig" in body
    assert 'id="f-phone-error"' in body and 'value="bel me maar"' in body
    status, body, _ = await b.post(f"{OFFICES}/new", {**NEW, "number": "#7"})
    assert status == 400 and 'id="f-number-error"' in body
    assert "Het nummer bestaat uit 1 tot 32 letters" in body
    assert snapshot(sessions) == before

    status, body, _ = await b.post(f"{OFFICES}/new", {**NEW, "send_activation": "1"})
    assert status == 200 and "ontvangt nu een activatielink" in body and "Kantoor Noord" in body
    office = _office(sessions, number="N-7")
    assert office is not None and office.city == "Groningen" and office.rights == ["DIP"]
    assert office.head_office_id == world.offices["HA"] and office.active
    with transaction(sessions) as s:
        head = s.scalar(select(User).where(User.office_id == office.id))
        assert head is not None and head.email == "noord@offices.example.org"
        assert head.role == UserRole.HEAD and head.status == UserStatus.PENDING
        mail = s.scalar(select(MailOutbox).where(MailOutbox.template == "activation"))
        assert mail is not None and mail.to_addr == "noord@offices.example.org"
        assert mail.locale == "nl"
    assert "/_gateway/activate/" in await mailbox.last_text()
    # without the activation link: just the office
    status, body, _ = await b.post(
        f"{OFFICES}/new", {**NEW, "number": "N-8", "email": "noord2@offices.example.org"}
    )
    assert status == 200 and "Het subkantoor is aangemaakt." in body


async def test_edit_deactivate_reactivate(
    gateway: Any, browser_for: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    member = browser_for(gw)
    await login(member, world.email("s1e"))
    b = browser_for(gw)
    await strong_login(b, world.email("ha"), clock, sessions)
    oid = world.offices["S1"]
    status, body = await b.get(f"{OFFICES}/{oid}")
    assert status == 200 and 'value="Office S1"' in body and 'value="S1-1"' in body
    status, body, _ = await b.post(
        f"{OFFICES}/{oid}",
        {**NEW, "number": "S1-1", "email": "s1@offices.example.org", "right": "DIP"},
    )
    assert status == 200 and "Die Änderungen wurden gespeichert." in body
    office = _office(sessions, id=oid)
    assert office is not None and office.name == "Kantoor Noord" and office.rights == ["DIP"]
    status, body, _ = await b.post(f"{OFFICES}/{oid}/deactivate", {})
    assert status == 200 and "deaktiviert" in body and "Inaktiv" in body
    assert not _office(sessions, id=oid).active  # type: ignore[union-attr]
    with transaction(sessions) as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "office.deactivate"))
        assert event is not None and event.client_addr == "127.0.0.1"
        assert event.actor == f"user:{world.users['ha']}"
    async with member.client.get(gw.url + "/_gateway/account", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"].startswith("/_gateway/login")
    await b.get(f"{OFFICES}/{oid}")
    status, body, _ = await b.post(f"{OFFICES}/{oid}/reactivate", {})
    assert status == 200 and "wieder aktiv" in body
    assert _office(sessions, id=oid).active  # type: ignore[union-attr]


async def test_delete_only_while_nobody_logged_in(
    gateway: Any, browser_for: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    member = browser_for(gw)
    await login(member, world.email("s1e"))  # S1 has been used
    b = browser_for(gw, language="en")
    await strong_login(b, world.email("ha"), clock, sessions)
    s1, s2 = world.offices["S1"], world.offices["S2"]
    await b.get(f"{OFFICES}/{s1}")
    status, body, _ = await b.post(f"{OFFICES}/{s1}/delete", {})
    assert status == 409
    assert "cannot be deleted: one of its users has already logged in" in body
    assert "Deactivate the office instead." in body
    assert _office(sessions, id=s1) is not None
    await b.get(f"{OFFICES}/{s2}")
    status, body, _ = await b.post(f"{OFFICES}/{s2}/delete", {})
    assert status == 200 and "The sub-office was deleted." in body
    assert _office(sessions, id=s2) is None
    with transaction(sessions) as s:
        assert s.get(User, world.users["s2h"]) is None  # never logged in: deleted with it
