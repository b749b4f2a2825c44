"""Issue 13: a deactivated user or office cannot log in by any method — password, passkey,
broker number + TAN, "continue without email" — and gets one clear page (403, no-store,
de/en/nl) naming whom to ask, over real TLS with the real login pages."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pyotp
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import (
    FirmSettings,
    create_sub_office,
    create_user,
    head_office_of,
    set_office_active,
    set_user_active,
)
from gateway.logins import TOTP_PURPOSE, begin_enrolment, confirm_enrolment
from gateway.logins._passkeys import finish_registration, registration_options, relying_party
from store import AuditEvent, Office, Sealer, User, UserRole, transaction
from tests.conftest import TEST_SECRET_KEY, FakeClock
from tests.logins.softauthn import SoftAuthenticator
from tests.logins.web.test_password_pages import login, set_password

FIRMS = FirmSettings()
BROKER = "60/123/4567"


def firm(sessions: sessionmaker[Session], make_user: Any, clock: FakeClock) -> tuple[int, int, int]:
    """Hanna (head user of the head office), a sub-office, and Emil employed there."""
    head = make_user(email="hanna@example.org", broker=BROKER, name="Hanna Haupt").id
    with transaction(sessions) as db:
        hanna = db.get(User, head)
        assert hanna is not None
        office = create_sub_office(
            db,
            head_office=head_office_of(db, hanna.organisation_id),
            number="0042",
            name="Filiale Nord",
            email="nord@example.org",
            rights=["ORV"],
            firms=FIRMS,
            now=clock(),
            actor="test:setup",
        )
        emil = create_user(
            db,
            broker_number=BROKER,
            email="emil@example.org",
            name="Emil Mitarbeiter",
            now=clock(),
            actor="test:setup",
            office=office,
            role=UserRole.EMPLOYEE,
            firms=FIRMS,
        )
        return head, office.id, emil.id


def deactivate_user(sessions: sessionmaker[Session], clock: FakeClock, user_id: int) -> None:
    with transaction(sessions) as db:
        user = db.get(User, user_id)
        assert user is not None
        set_user_active(db, user, False, now=clock(), actor="test")


def deactivate_office(sessions: sessionmaker[Session], clock: FakeClock, office_id: int) -> None:
    with transaction(sessions) as db:
        office = db.get(Office, office_id)
        assert office is not None
        set_office_active(db, office, False, now=clock(), actor="test")


async def test_password_login_of_a_deactivated_user_gets_the_clear_page(
    gateway: Any, browser_for: Any, make_user: Any, sessions: Any, clock: FakeClock
) -> None:
    gw = await gateway()
    _, _, emil = firm(sessions, make_user, clock)
    set_password(sessions, emil)
    deactivate_user(sessions, clock, emil)
    b = browser_for(gw)
    status, body, response = await login(b, "emil@example.org")
    assert status == 403
    assert response.headers["Cache-Control"] == "no-store"
    assert "Ihr Zugang ist deaktiviert." in body
    # the sub-office has no head user of its own: the head office's head user is named
    assert "Bitte wenden Sie sich an Hanna Haupt (hanna@example.org)." in body
    assert 'name="password"' not in body
    with transaction(sessions) as db:
        refused = db.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "login.password", AuditEvent.outcome == "refused"
            )
        ).all()
        assert [e.details["reason"] for e in refused] == ["user_disabled"]
    # a wrong password still says only "wrong" (no account state for a guess)
    status, body, _ = await login(b, "emil@example.org", "not the password")
    assert status == 401 and "deaktiviert" not in body
    # English and Dutch
    en = browser_for(gw, language="en")
    status, body, _ = await login(en, "emil@example.org")
    assert status == 403 and "Your account has been deactivated." in body
    assert "Please contact Hanna Haupt (hanna@example.org)." in body
    nl = browser_for(gw, language="nl")
    status, body, _ = await login(nl, "emil@example.org")
    assert status == 403 and "Uw account is gedeactiveerd." in body


async def test_an_inactive_office_refuses_password_tan_and_restricted_logins(
    gateway: Any, browser_for: Any, make_user: Any, sessions: Any, clock: FakeClock, mailbox: Any
) -> None:
    gw = await gateway()
    head, office, emil = firm(sessions, make_user, clock)
    set_password(sessions, emil)
    deactivate_office(sessions, clock, office)
    b = browser_for(gw)
    status, body, _ = await login(b, "emil@example.org")
    assert status == 403 and "Ihre Geschäftsstelle ist deaktiviert." in body
    assert "Hanna Haupt" in body
    # broker number + TAN: refused before any TAN is mailed
    await b.get("/_gateway/login/broker?next=/antrag")
    status, body, _ = await b.post(
        "/_gateway/login/broker",
        {"broker": BROKER, "email": "emil@example.org", "next": "/antrag"},
        follow=False,
    )
    assert status == 403 and "Ihre Geschäftsstelle ist deaktiviert." in body
    assert await mailbox.deliver() == []
    # the head office deactivated: nobody of the firm gets in, not even "without email"
    with transaction(sessions) as db:
        hanna = db.get(User, head)
        assert hanna is not None
        head_office = head_office_of(db, hanna.organisation_id).id
    deactivate_office(sessions, clock, head_office)
    set_password(sessions, head)
    status, body, _ = await login(b, "hanna@example.org")
    assert status == 403 and "Ihre Geschäftsstelle ist deaktiviert." in body
    assert "Bitte wenden Sie sich an Ihre Maklerbetreuung." in body  # nobody above her
    deactivate_office(sessions, clock, office)  # (already) — Emil: the head office is named
    status, body, _ = await login(b, "emil@example.org")
    assert status == 403 and "Die Hauptgeschäftsstelle Ihrer Firma ist deaktiviert." in body
    await b.get("/_gateway/login/broker?next=/rechner")
    await b.post(
        "/_gateway/login/broker",
        {"broker": BROKER, "email": "someone@example.org", "next": "/rechner"},
        follow=False,
    )
    status, body, _ = await b.post(
        "/_gateway/login/broker/restricted",
        {"broker": BROKER, "email": "someone@example.org", "next": "/rechner"},
        follow=False,
    )
    assert status == 403 and "Ihre Geschäftsstelle ist deaktiviert." in body


async def test_a_user_deactivated_between_password_and_second_factor_is_refused(
    gateway: Any, browser_for: Any, make_user: Any, sessions: Any, clock: FakeClock
) -> None:
    """complete_login looks at the store once more, whatever the factor."""
    gw = await gateway()
    _, _, emil = firm(sessions, make_user, clock)
    set_password(sessions, emil)
    sealer = Sealer(secret=TEST_SECRET_KEY, purpose=TOTP_PURPOSE)
    enrolment = begin_enrolment(sessions, user_id=emil, sealer=sealer, issuer="bg", now=clock())
    code = pyotp.TOTP(enrolment.secret).at(clock())
    confirm_enrolment(sessions, user_id=emil, code=code, sealer=sealer, now=clock())
    clock.advance(timedelta(minutes=1))  # a fresh code, not the enrolment's
    b = browser_for(gw)
    status, _, response = await login(b, "emil@example.org")
    assert status == 303 and "second-factor" in response.headers["Location"]
    deactivate_user(sessions, clock, emil)
    await b.get("/_gateway/login/second-factor?next=/antrag")
    status, body, _ = await b.post(
        "/_gateway/login/second-factor",
        {"code": pyotp.TOTP(enrolment.secret).at(clock()), "next": "/antrag"},
        follow=False,
    )
    assert status == 403 and "Ihr Zugang ist deaktiviert." in body
    status, _ = await b.get("/antrag")
    assert status == 401  # nobody was logged in


async def test_a_passkey_of_a_deactivated_user_is_answered_with_the_refusal(
    gateway: Any, browser_for: Any, make_user: Any, sessions: Any, clock: FakeClock
) -> None:
    """The passkey script posts JSON and shows ``error``: the same words as the page."""
    gw = await gateway(host="localhost")  # WebAuthn needs a domain
    _, _, emil = firm(sessions, make_user, clock)
    rp = relying_party(gw.url, "brokergate")
    authn = SoftAuthenticator(origin=rp.origin, rp_id=rp.rp_id, user_verification=True)
    ceremony = registration_options(sessions, user_id=emil, rp=rp)
    finish_registration(
        sessions,
        user_id=emil,
        credential_json=authn.create(ceremony.options_json),
        challenge=ceremony.challenge,
        rp=rp,
        name="Laptop",
        now=clock(),
    )
    deactivate_user(sessions, clock, emil)
    b = browser_for(gw)
    _, page = await b.get("/_gateway/login/passkey?next=/antrag")
    match = re.search(r'data-csrf="([^"]+)"', page)
    assert match
    csrf = match.group(1)
    async with b.client.post(
        gw.url + "/_gateway/login/passkey/options", json={"csrf": csrf}
    ) as response:
        options = await response.text()
    status, answer = await b.post_json(
        "/_gateway/login/passkey/verify",
        {"csrf": csrf, "credential": json.loads(authn.get(options)), "next": "/antrag"},
    )
    assert status == 403
    assert answer["error"] == (
        "Ihr Zugang ist deaktiviert. Bitte wenden Sie sich an Hanna Haupt (hanna@example.org)."
    )
    assert (await b.get("/antrag"))[0] == 401  # nobody was logged in
