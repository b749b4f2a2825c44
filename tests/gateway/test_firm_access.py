"""Issue 13 in the gateway: what the portal is told about the firm, route rights, and who
may log in — real TLS on loopback, certificates from our CA, a real aiohttp upstream that
echoes what it received, the store's firm as ``ca`` writes it.
"""

from __future__ import annotations

import json
from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy.orm import Session, sessionmaker

from ca import (
    FirmSettings,
    create_sub_office,
    create_user,
    head_office_of,
    set_office_active,
    set_user_active,
    set_user_rights,
)
from gateway import SESSIONS, RouteRule
from store import Level, Office, User, UserRole, transaction
from tests.gateway.conftest import Brokers, ServerTLS
from tests.gateway.helpers import RawResponse, client_context, raw_request
from tests.polling import async_wait_for

FIRMS = FirmSettings()
BROKER = "60/123/4567"
ROUTES = (
    RouteRule(prefix="/antrag", level=Level.BASIC),
    RouteRule(prefix="/antrag/orv", level=Level.BASIC, right="ORV"),
)


async def get(
    gw: Any, server_tls: ServerTLS, target: str = "/portal", cert: Any = None, **kw: Any
) -> RawResponse:
    return await raw_request(gw.url, target, context=client_context(server_tls.ca, cert), **kw)


def head_office_id(sessions: sessionmaker[Session], user_id: int) -> int:
    with transaction(sessions) as db:
        user = db.get(User, user_id)
        assert user is not None
        return head_office_of(db, user.organisation_id).id


def sub_office(sessions: sessionmaker[Session], head_user: int, clock: Any, **kw: Any) -> int:
    with transaction(sessions) as db:
        user = db.get(User, head_user)
        assert user is not None
        office = create_sub_office(
            db,
            head_office=head_office_of(db, user.organisation_id),
            number=kw.pop("number", "0042"),
            name=kw.pop("name", "Filiale Nord"),
            email=kw.pop("email", "nord@example.org"),
            firms=FIRMS,
            now=clock(),
            actor="test:setup",
            **kw,
        )
        return office.id


def add_user(
    sessions: sessionmaker[Session],
    clock: Any,
    *,
    office_id: int,
    email: str,
    name: str,
    rights: list[str] | None = None,
    role: UserRole = UserRole.EMPLOYEE,
) -> int:
    with transaction(sessions) as db:
        office = db.get(Office, office_id)
        assert office is not None
        user = create_user(
            db,
            broker_number=office.organisation.broker_number,
            email=email,
            name=name,
            now=clock(),
            actor="test:setup",
            office=office,
            role=role,
            rights=rights,
            firms=FIRMS,
        )
        return user.id


def session_cookie(gw: Any, user_id: int, clock: Any, level: Level = Level.BASIC) -> list[Any]:
    new = gw.app[SESSIONS].start(user_id=user_id, level=level, method="password", now=clock())
    return [("Cookie", f"__Host-brokergate={new.cookie}")]


# --- 2. identity headers and the signed assertion


async def test_the_portal_is_told_office_head_office_role_and_rights(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, sessions: Any, clock: Any
) -> None:
    gw = await start_gateway()
    head = brokers.user(email="hanna@example.org", broker=BROKER, name="Hanna Haupt")
    office = sub_office(sessions, head, clock, rights=["DIL", "ORV"])
    employee = add_user(
        sessions, clock, office_id=office, email="emil@example.org", name="Emil", rights=["ORV"]
    )
    cert = brokers.issue(employee)
    forged = [
        ("X-Brokergate-Rights", "DIP,DIL,ORV"),
        ("X-Brokergate-Role", "head"),
        ("x_brokergate_office_number", "0001"),
        ("X-Brokergate-Head-Office-Number", "99/999/9999"),
    ]
    response = await get(gw, server_tls, "/portal", cert, headers=forged)
    assert response.status == 200, response.body
    seen = response.echoed()
    assert seen["x-brokergate-office-number"] == ["0042"]
    assert seen["x-brokergate-head-office-number"] == [BROKER]
    assert seen["x-brokergate-role"] == ["employee"]
    assert seen["x-brokergate-rights"] == ["ORV"]  # SECURITY: no client copy survives
    assert "x-brokergate-office-number" in seen and len(seen["x-brokergate-rights"]) == 1
    jwks = json.loads((await get(gw, server_tls, "/.well-known/jwks.json")).body)
    claims = jwt.decode(
        seen["x-brokergate-assertion"][0], KeySet.import_key_set(jwks), algorithms=["ES256"]
    ).claims
    assert claims["office_number"] == "0042" and claims["head_office_number"] == BROKER
    assert claims["role"] == "employee" and claims["rights"] == ["ORV"]

    # the head user of the head office: the broker number twice, role head, all rights
    response = await get(gw, server_tls, "/portal", headers=session_cookie(gw, head, clock))
    seen = response.echoed()
    assert seen["x-brokergate-office-number"] == [BROKER]
    assert seen["x-brokergate-head-office-number"] == [BROKER]
    assert seen["x-brokergate-role"] == ["head"]
    assert seen["x-brokergate-rights"] == ["DIL,DIP,ORV"]  # sorted, comma-separated


async def test_a_restricted_session_is_the_firm_without_role_or_rights(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    gw = await start_gateway(default_level=Level.RESTRICTED)
    head = brokers.user(email="hanna@example.org", broker=BROKER)
    cookie = session_cookie(gw, head, clock, level=Level.RESTRICTED)
    response = await get(gw, server_tls, "/portal", headers=cookie)
    assert response.status == 200, response.body
    seen = response.echoed()
    assert seen["x-brokergate-level"] == ["restricted"]
    assert seen["x-brokergate-office-number"] == [BROKER]
    assert "x-brokergate-role" not in seen
    assert seen.get("x-brokergate-rights", [""]) == [""]


async def test_a_changed_right_reaches_the_portal_within_the_refresh(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, sessions: Any, clock: Any
) -> None:
    gw = await start_gateway()
    head = brokers.user(email="hanna@example.org", broker=BROKER)
    cookie = session_cookie(gw, head, clock)
    first = await get(gw, server_tls, "/portal", headers=cookie)
    assert first.echoed()["x-brokergate-rights"] == ["DIL,DIP,ORV"]
    with transaction(sessions) as db:
        user = db.get(User, head)
        assert user is not None
        set_user_rights(db, user, ["DIL"], firms=FIRMS, now=clock(), actor="test")
    later = await async_wait_for(
        lambda: get(gw, server_tls, "/portal", headers=cookie),
        until=lambda r: r.echoed().get("x-brokergate-rights") == ["DIL"],
        timeout=5,
        message="the portal is still told the old rights",
    )
    assert later.status == 200


# --- 3. route rights


async def test_a_user_without_the_routes_right_gets_the_clear_page(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, sessions: Any, clock: Any
) -> None:
    gw = await start_gateway(routes=ROUTES)
    head = brokers.user(email="hanna@example.org", broker=BROKER, name="Hanna Haupt")
    office = head_office_id(sessions, head)
    emil = add_user(
        sessions, clock, office_id=office, email="emil@example.org", name="Emil", rights=["DIL"]
    )
    cookie = session_cookie(gw, emil, clock)
    refused = await get(gw, server_tls, "/antrag/orv/neu", headers=cookie)
    assert refused.status == 403
    orv = FIRMS.product("ORV").name("de")
    assert f"Für {orv} haben Sie keine Berechtigung." in refused.body
    assert "Ihr Hauptbenutzer Hanna Haupt kann sie Ihnen geben." in refused.body
    assert refused.header("Cache-Control") == ["no-store"]
    # the same page in English and Dutch, product name from the catalogue
    english = await get(gw, server_tls, "/antrag/orv", headers=[*cookie, ("Accept-Language", "en")])
    assert english.status == 403
    assert "Your head user Hanna Haupt can give it to you." in english.body
    assert f"You do not have permission for {FIRMS.product('ORV').name('en')}." in english.body
    dutch = await get(gw, server_tls, "/antrag/orv", headers=[*cookie, ("Accept-Language", "nl")])
    assert f"Voor {FIRMS.product('ORV').name('nl')} heeft u geen rechten." in dutch.body
    # a permitted product passes; the head user (all rights) passes the ORV route
    assert (await get(gw, server_tls, "/antrag/dil", headers=cookie)).status == 200
    head_cookie = session_cookie(gw, head, clock)
    assert (await get(gw, server_tls, "/antrag/orv/neu", headers=head_cookie)).status == 200
    # the head office's head user without the right: ask the broker support
    with transaction(sessions) as db:
        user = db.get(User, head)
        assert user is not None
        set_user_rights(db, user, ["DIL"], firms=FIRMS, now=clock(), actor="test")
    page = await async_wait_for(
        lambda: get(gw, server_tls, "/antrag/orv", headers=head_cookie),
        until=lambda r: r.status == 403,
        timeout=5,
        message="the head user still reaches ORV without the right",
    )
    assert "Ihre Maklerbetreuung kann sie Ihnen geben." in page.body


async def test_the_no_right_page_names_the_product_in_the_catalogues_words(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, sessions: Any, clock: Any
) -> None:
    gw = await start_gateway(routes=ROUTES)
    head = brokers.user(email="hanna@example.org", broker=BROKER, name="Hanna Haupt")
    emil = add_user(
        sessions,
        clock,
        office_id=head_office_id(sessions, head),
        email="emil@example.org",
        name="Emil",
        rights=[],
    )
    page = await get(gw, server_tls, "/antrag/orv", headers=session_cookie(gw, emil, clock))
    assert f"Für {FIRMS.product('ORV').name('de')} haben Sie keine Berechtigung." in page.body


# --- 1. who may log in: certificate SSO and existing sessions


async def test_certificate_of_a_deactivated_user_gets_the_clear_page_not_the_login_form(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, sessions: Any, clock: Any
) -> None:
    gw = await start_gateway()
    head = brokers.user(email="hanna@example.org", broker=BROKER, name="Hanna Haupt")
    emil = add_user(
        sessions, clock, office_id=head_office_id(sessions, head), email="e@example.org", name="E"
    )
    cert = brokers.issue(emil)
    assert (await get(gw, server_tls, "/portal", cert)).status == 200
    with transaction(sessions) as db:
        user = db.get(User, emil)
        assert user is not None
        set_user_active(db, user, False, now=clock(), actor="test")
    page = await async_wait_for(
        lambda: get(gw, server_tls, "/portal", cert),
        until=lambda r: r.status != 200,
        timeout=5,
        message="the deactivated user's certificate still signs on",
    )
    assert page.status == 403
    assert "Ihr Zugang ist deaktiviert." in page.body
    assert "Bitte wenden Sie sich an Hanna Haupt (hanna@example.org)." in page.body
    assert page.header("Cache-Control") == ["no-store"]
    assert "/_gateway/login/password" not in page.body  # no silent fall-back to a form
    login = await get(gw, server_tls, "/_gateway/login", cert)
    assert login.status == 403 and "Ihr Zugang ist deaktiviert." in login.body


async def test_an_open_session_ends_when_its_office_is_deactivated(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, sessions: Any, clock: Any
) -> None:
    gw = await start_gateway()
    head = brokers.user(email="hanna@example.org", broker=BROKER, name="Hanna Haupt")
    office = sub_office(sessions, head, clock, rights=["ORV"])
    emil = add_user(sessions, clock, office_id=office, email="e@example.org", name="Emil")
    cookie = session_cookie(gw, emil, clock)
    assert (await get(gw, server_tls, "/portal", headers=cookie)).status == 200
    with transaction(sessions) as db:
        row = db.get(Office, office)
        assert row is not None
        set_office_active(db, row, False, now=clock(), actor="test")  # sessions left open
    page = await async_wait_for(
        lambda: get(gw, server_tls, "/portal", headers=cookie),
        until=lambda r: r.status != 200,
        timeout=5,
        message="the session of a deactivated office still passes",
    )
    assert page.status == 403 and "Ihre Geschäftsstelle ist deaktiviert." in page.body
    assert "Hanna Haupt" in page.body
    (cleared,) = page.header("Set-Cookie")  # the ended session's cookie is deleted
    assert cleared.startswith("__Host-brokergate=") and "Max-Age=0" in cleared
    # a head office deactivated: its sub-offices' users are refused too (broker support)
    with transaction(sessions) as db:
        row = db.get(Office, office)
        assert row is not None
        set_office_active(db, row, True, now=clock(), actor="test")
        head_office = head_office_of(db, row.organisation_id)
        set_office_active(db, head_office, False, now=clock(), actor="test")
    # (a new session each time: the refused request ends the one it came with)
    page = await async_wait_for(
        lambda: get(gw, server_tls, "/portal", headers=session_cookie(gw, emil, clock)),
        until=lambda r: "Die Hauptgeschäftsstelle Ihrer Firma ist deaktiviert." in r.body,
        timeout=5,
        message="a user of a sub-office of a deactivated head office is not told so",
    )
    assert page.status == 403
    assert "Bitte wenden Sie sich an Ihre Maklerbetreuung." in page.body


async def test_deactivation_holds_on_a_replica_with_warm_caches(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, sessions: Any, clock: Any
) -> None:
    """Two gateways on one store: B has the user and the session cached; deactivated
    (sessions ended by the caller, as the head-user pages do), B refuses within 5 s."""
    a = await start_gateway()
    b = await start_gateway()
    head = brokers.user(email="hanna@example.org", broker=BROKER)
    emil = add_user(
        sessions, clock, office_id=head_office_id(sessions, head), email="e@example.org", name="E"
    )
    cert = brokers.issue(emil)
    cookie = session_cookie(a, emil, clock)
    assert (await get(b, server_tls, "/portal", headers=cookie)).status == 200
    assert (await get(b, server_tls, "/portal", cert)).status == 200
    with transaction(sessions) as db:
        user = db.get(User, emil)
        assert user is not None
        set_user_active(db, user, False, now=clock(), actor="test")
    a.app[SESSIONS].end_all_for_user(emil, clock())
    for request in (
        lambda: get(b, server_tls, "/portal", headers=cookie),
        lambda: get(b, server_tls, "/portal", cert),
    ):
        refused = await async_wait_for(
            request,
            until=lambda r: r.status != 200,
            timeout=5,
            message="replica B still lets the deactivated user in",
        )
        assert refused.status in (401, 403)
    assert (await get(b, server_tls, "/portal", cert)).status == 403
