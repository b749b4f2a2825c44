"""Broker number + TAN pages (seed 001): the TAN read from a real SMTP server, the seed's
error messages, "continue without email" → restricted, refused on a basic route."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from joserfc import jwt
from joserfc.jwk import KeySet

from gateway._metrics import GatewayMetrics
from tests.conftest import FakeClock


def tan_from(text: str) -> str:
    match = re.search(r"TAN: (\d{8})", text)
    assert match, text
    return match.group(1)


async def start(
    b: Any, broker: str, email: str, next_path: str = "/antrag"
) -> tuple[int, str, Any]:
    await b.get(f"/_gateway/login/broker?next={next_path}")
    return await b.post(
        "/_gateway/login/broker",
        {"broker": broker, "email": email, "next": next_path},
        follow=False,
    )


async def test_tan_login_with_the_mailed_tan(
    gateway: Any, browser_for: Any, make_user: Any, mailbox: Any
) -> None:
    gw = await gateway()
    make_user(email="anna@example.org", broker="60/123/4567", name="Anna Muster")
    b = browser_for(gw)
    status, body = await b.get("/_gateway/login/broker?next=/antrag")
    assert "Anmelden mit Vermittlernummer" in body and "Beispiel: 60/123/4567" in body
    assert 'aria-describedby="f-broker-hint"' in body
    status, _, response = await b.post(
        "/_gateway/login/broker",
        {"broker": "60/123/4567", "email": "Anna@Example.org", "next": "/antrag"},
        follow=False,
    )
    assert (
        status == 303
        and response.headers["Location"] == "/_gateway/login/broker/tan?next=%2Fantrag"
    )
    status, body = await b.get("/_gateway/login/broker/tan?next=/antrag")
    assert "Überprüfen Sie Ihren Posteingang" in body and "anna@example.org" in body
    assert "nur für 15 Minuten gültig" in body and 'autocomplete="one-time-code"' in body
    text = await mailbox.last_text()
    assert "Anna Muster" in text and "15 Minuten" in text
    tan = tan_from(text)
    status, body, _ = await b.post(
        "/_gateway/login/broker/tan", {"tan": "00000000", "next": "/antrag"}
    )
    assert status == 401 and "Diese TAN ist nicht gültig" in body
    await b.get("/_gateway/login/broker/tan?next=/antrag")
    status, _, response = await b.post(
        "/_gateway/login/broker/tan",
        {"tan": tan, "remember": "yes", "next": "/antrag"},
        follow=False,
    )
    assert status == 303 and response.headers["Location"] == "/antrag"
    assert "__Host-bg-device" in response.headers.get("Set-Cookie", "") or any(
        c.key == "__Host-bg-device" for c in b.client.cookie_jar
    )
    status, body = await b.get("/antrag")
    headers = json.loads(body)["headers"]
    assert status == 200 and headers["x-brokergate-level"] == "basic"
    assert headers["x-brokergate-method"] == "email-tan"

    # The same browser, signed out, comes back: no new TAN mail within 30 days.
    await b.get("/_gateway/account")
    await b.post("/_gateway/logout", {})
    before = len(await mailbox.deliver())
    status, _, response = await start(b, "601234567", "anna@example.org")
    assert status == 303 and response.headers["Location"] == "/antrag"
    assert len(await mailbox.deliver()) == before


async def test_invalid_broker_number_and_unknown_email(
    gateway: Any, browser_for: Any, make_user: Any
) -> None:
    gw = await gateway()
    make_user(email="anna@example.org", broker="60/123/4567")
    b = browser_for(gw)
    status, body, _ = await start(b, "70/", "max.muster@muster.de")
    assert status == 401 and "Diese Vermittlernummer ist ungültig." in body
    assert (
        'aria-describedby="f-broker-hint f-broker-error"' in body and 'aria-invalid="true"' in body
    )
    en = browser_for(gw, language="en")
    status, body, _ = await start(en, "99/999/9999", "x@example.org")
    assert "This broker number is invalid." in body
    status, body, _ = await start(b, "60/123/4567", "max.muster@musterman.de")
    assert status == 401 and "Unbekannte E-Mail-Adresse" in body
    assert "max.muster@musterman.de" in body and "Maklerbetreuung" in body
    assert "Sie möchten sich ohne E-Mail anmelden?" in body and "Weiter zum Online-Rechner" in body
    nl = browser_for(gw, language="nl")
    status, body, _ = await start(nl, "60/123/4567", "max@musterman.de")
    assert "Onbekend e-mailadres" in body


async def test_restricted_session_is_refused_on_a_basic_route(
    gateway: Any, browser_for: Any, make_user: Any
) -> None:
    metrics = GatewayMetrics()
    gw = await gateway(metrics=metrics)
    make_user(email="anna@example.org", broker="60/123/4567")
    b = browser_for(gw)
    await start(b, "60/123/4567", "max.muster@musterman.de", next_path="/rechner")
    status, _, response = await b.post(
        "/_gateway/login/broker/restricted",
        {"broker": "60/123/4567", "email": "max.muster@musterman.de", "next": "/rechner"},
        follow=False,
    )
    assert status == 303 and response.headers["Location"] == "/rechner"
    status, body = await b.get("/rechner")
    headers = json.loads(body)["headers"]
    assert status == 200 and headers["x-brokergate-level"] == "restricted"
    assert headers["x-brokergate-broker-number"] == "60/123/4567"
    # One of the five method values: the broker-number + e-mail TAN flow, cut short (the
    # level says what it proved); the signed assertion's amr says the same.
    assert headers["x-brokergate-method"] == "email-tan"
    _, jwks = await b.get("/.well-known/jwks.json")
    claims = jwt.decode(
        headers["x-brokergate-assertion"],
        KeySet.import_key_set(json.loads(jwks)),
        algorithms=["ES256"],
    ).claims
    assert claims["amr"] == ["email-tan"] and claims["level"] == "restricted"
    counted = metrics.logins.labels(method="email-tan", outcome="success")._value.get()
    assert counted == 1
    status, body = await b.get("/antrag")
    assert status == 403 and "Anmeldung mit Passwort oder TAN" in body  # the step-up page says why
    status, _ = await b.get("/_gateway/account", follow=False)
    assert status == 303  # the account is not open to a restricted session


async def test_tan_expires_and_resend_is_throttled(
    gateway: Any, browser_for: Any, make_user: Any, mailbox: Any, clock: FakeClock
) -> None:
    gw = await gateway()
    make_user(email="anna@example.org", broker="60/123/4567")
    b = browser_for(gw)
    await start(b, "60/123/4567", "anna@example.org")
    tan = tan_from(await mailbox.last_text())
    status, body, _ = await start(b, "60/123/4567", "anna@example.org")
    assert status == 401 and "Bitte warten Sie kurz" in body
    clock.advance(timedelta(minutes=15))
    await b.get("/_gateway/login/broker/tan")
    status, body, _ = await b.post("/_gateway/login/broker/tan", {"tan": tan})
    assert status == 401 and "Diese TAN ist nicht gültig" in body


async def test_tan_steps_on_two_replicas_see_each_others_session_data(
    gateway: Any, browser_for: Any, make_user: Any, mailbox: Any
) -> None:
    """Each step of the flow may land on another worker or replica (a new connection, a
    load balancer): a step must see what the previous one wrote to the session, not a
    cached copy from before it (found by the fault suite: the TAN page sent the broker
    back to the broker-number form). The refresh interval is at its 2 s maximum, so the
    replicas' caches do not catch up between two steps by themselves."""
    from tests.logins.web.conftest import Browser

    slow = {"revocation_refresh_interval": timedelta(seconds=2)}
    a, b = await gateway(**slow), await gateway(**slow)
    make_user(email="anna@example.org", broker="60/123/4567")
    on_b = browser_for(b)
    on_a = Browser(gateway=a, client=on_b.client)  # one browser (one cookie jar), two replicas
    status, _ = await on_b.get("/_gateway/login/broker?next=/antrag")  # B caches the session
    assert status == 200
    on_a.last = on_b.last
    status, _, response = await on_a.post(
        "/_gateway/login/broker",
        {"broker": "60/123/4567", "email": "anna@example.org", "next": "/antrag"},
        follow=False,
    )
    assert status == 303 and "/login/broker/tan" in response.headers["Location"]
    status, body = await on_b.get("/_gateway/login/broker/tan?next=/antrag", follow=False)
    assert status == 200 and "anna@example.org" in body  # not a 303 back to the form
    tan = tan_from(await mailbox.last_text())
    status, _, response = await on_b.post(
        "/_gateway/login/broker/tan", {"tan": tan, "next": "/antrag"}, follow=False
    )
    assert status == 303 and response.headers["Location"] == "/antrag"
    status, body = await on_a.get("/antrag")
    assert status == 200 and json.loads(body)["headers"]["x-brokergate-level"] == "basic"


async def test_try_again_names_the_next_full_minute_in_local_time(
    gateway: Any, browser_for: Any, make_user: Any, clock: FakeClock, login_settings: Any
) -> None:
    """Issue 16: "ab 06:53" for 06:53:20 named a minute in which trying again still fails."""
    gw = await gateway()
    make_user(email="anna@example.org", broker="60/123/4567")
    b = browser_for(gw)
    clock.advance(timedelta(seconds=20))
    await start(b, "60/123/4567", "anna@example.org")
    until = clock() + login_settings.tan_resend_interval  # seconds past a full minute
    assert until.second == 20
    status, body, _ = await start(b, "60/123/4567", "anna@example.org")
    shown = (until.replace(second=0) + timedelta(minutes=1)).astimezone(ZoneInfo("Europe/Berlin"))
    assert status == 401 and "Bitte warten Sie kurz" in body
    assert f"{shown:%H:%M}" in body and "MEZ" in body, body
