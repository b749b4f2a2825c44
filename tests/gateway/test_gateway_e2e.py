"""The gateway end to end: real TLS on loopback, certificates from our CA, a real upstream.

The gateway's clock is the FakeClock ``clock``; expiry is reached by moving it, never by
sleeping. Revocation is seen through the refresh task (interval 0.2 s in these tests),
polled with a bounded loop.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from gateway import SETTINGS, RouteRule
from store import Level, format_local_datetime
from tests.gateway.conftest import Brokers, ServerTLS, foreign_certificate
from tests.gateway.helpers import RawResponse, client_context, raw_request
from tests.polling import async_wait_for


def berlin_time(value: dt.datetime) -> str:
    """A time as the German pages show it: in Europe/Berlin with the zone (issue 15)."""
    return format_local_datetime(value, "de", ZoneInfo("Europe/Berlin"))


IDENTITY = "x-brokergate-"


async def get(
    gw: Any, server_tls: ServerTLS, target: str = "/portal", cert: Any = None, **kw: Any
) -> RawResponse:
    return await raw_request(gw.url, target, context=client_context(server_tls.ca, cert), **kw)


async def test_valid_certificate_single_sign_on(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    gw = await start_gateway(routes=(RouteRule(prefix="/antrag", level=Level.STRONG),))
    user = brokers.user(email="erika@example.org", broker="60/123/4567")
    cert = brokers.issue(user)
    response = await get(gw, server_tls, "/antrag/neu?x=1", cert)
    assert response.status == 200, response.body  # no page in between
    echo = json.loads(response.body)
    assert echo["path"] == "/antrag/neu?x=1"
    seen = response.echoed()
    assert seen["x-brokergate-broker-number"] == ["60/123/4567"]
    assert seen["x-brokergate-user-id"] == [str(user)]
    assert seen["x-brokergate-email"] == ["erika@example.org"]
    assert seen["x-brokergate-level"] == ["strong"]
    assert seen["x-brokergate-method"] == ["certificate"]
    assert seen["x-brokergate-cert-serial"] == [cert.serial]
    assert seen["x-brokergate-cert-not-after"] == [
        cert.certificate.not_valid_after_utc.isoformat().replace("+00:00", "Z")
    ]
    # the assertion verifies with the JWKS the gateway serves
    jwks = json.loads((await get(gw, server_tls, "/.well-known/jwks.json")).body)
    token = jwt.decode(
        seen["x-brokergate-assertion"][0], KeySet.import_key_set(jwks), algorithms=["ES256"]
    )
    assert token.header["kid"] in {k["kid"] for k in jwks["keys"]}
    claims = token.claims
    assert (
        claims["sub"] == str(user)
        and claims["level"] == "strong"
        and claims["amr"] == ["certificate"]
    )
    assert claims["broker_number"] == "60/123/4567" and claims["cert_serial"] == cert.serial
    assert claims["exp"] - claims["iat"] == 60 and claims["iat"] == int(clock().timestamp())
    settings = gw.app[SETTINGS]
    assert claims["iss"] == settings.public_url and claims["aud"] == settings.upstream_url
    # the session cookie: __Host-, Secure, HttpOnly, SameSite=Lax, Path=/
    (set_cookie,) = response.header("Set-Cookie")
    assert set_cookie.startswith("__Host-brokergate=")
    for attribute in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert attribute in set_cookie
    assert "Domain" not in set_cookie


async def test_assertion_is_rejected_with_a_foreign_key(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    from joserfc.errors import BadSignatureError
    from joserfc.jwk import ECKey

    gw = await start_gateway()
    cert = brokers.issue(brokers.user())
    seen = (await get(gw, server_tls, "/", cert)).echoed()
    other = ECKey.generate_key("P-256")
    other_set = KeySet.import_key_set(
        {
            "keys": [
                {
                    **other.as_dict(private=False),
                    "kid": jwt.decode(
                        seen["x-brokergate-assertion"][0],
                        KeySet.import_key_set(
                            json.loads((await get(gw, server_tls, "/.well-known/jwks.json")).body)
                        ),
                    ).header["kid"],
                }
            ]
        }
    )
    with pytest.raises(BadSignatureError):
        jwt.decode(seen["x-brokergate-assertion"][0], other_set, algorithms=["ES256"])


async def test_no_certificate_gets_the_login_page(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    gw = await start_gateway()
    response = await get(gw, server_tls, "/portal")
    assert response.status == 401
    assert "<h1>Anmelden</h1>" in response.body
    assert response.header("Content-Security-Policy")
    english = await get(gw, server_tls, "/portal", headers=[("Accept-Language", "en-GB,en;q=0.8")])
    assert "<h1>Sign in</h1>" in english.body
    dutch = await get(gw, server_tls, "/portal", headers=[("Accept-Language", "nl")])
    assert "<h1>Inloggen</h1>" in dutch.body


async def test_anonymous_route_passes_without_identity(
    start_gateway, server_tls: ServerTLS
) -> None:
    gw = await start_gateway(routes=(RouteRule(prefix="/public", level=Level.ANONYMOUS),))
    response = await get(gw, server_tls, "/public/info", headers=[("X-Brokergate-User-Id", "1")])
    assert response.status == 200
    assert not [k for k in response.echoed() if k.startswith(IDENTITY)]


async def test_expired_certificate_explained(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    gw = await start_gateway()
    cert = brokers.issue(brokers.user())
    clock.advance(
        dt.timedelta(days=732)
    )  # two calendar years (29 February 2028 between) and a day later
    response = await get(gw, server_tls, "/portal", cert)  # the TLS handshake completed
    assert response.status == 403
    assert "Ihr Zertifikat ist abgelaufen" in response.body
    expected = berlin_time(cert.certificate.not_valid_after_utc)
    assert f"seit {expected} abgelaufen" in response.body
    assert "Mein Konto" in response.body  # what to do
    assert cert.serial in response.body
    english = await get(gw, server_tls, "/portal", cert, headers=[("Accept-Language", "en")])
    assert "Your certificate has expired" in english.body


async def test_not_yet_valid_certificate_explained(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    gw = await start_gateway()
    cert = brokers.issue(brokers.user(), at=clock() + dt.timedelta(days=2))
    response = await get(gw, server_tls, "/portal", cert)
    assert response.status == 403
    assert "noch nicht gültig" in response.body
    assert berlin_time(cert.certificate.not_valid_before_utc) in response.body


async def test_revoked_certificate_explained(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    gw = await start_gateway()
    cert = brokers.issue(brokers.user())
    brokers.revoke(cert.serial)
    response = await get(gw, server_tls, "/portal", cert)
    assert response.status == 403
    assert "Ihr Zertifikat wurde gesperrt" in response.body
    assert berlin_time(clock()) in response.body
    assert not response.header("Set-Cookie")  # no session for a revoked certificate


async def test_foreign_certificate_explained(
    start_gateway, server_tls: ServerTLS, tmp_path
) -> None:
    gw = await start_gateway()
    response = await get(gw, server_tls, "/portal", foreign_certificate(tmp_path))
    assert response.status == 403
    assert "Dieses Zertifikat kennen wir nicht" in response.body


async def test_revocation_ends_an_open_session_on_the_next_request(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    gw = await start_gateway()
    cert = brokers.issue(brokers.user())
    first = await get(gw, server_tls, "/portal", cert)
    assert first.status == 200
    cookie = first.cookies["__Host-brokergate"]
    with_cookie = [("Cookie", f"__Host-brokergate={cookie}")]
    again = await get(gw, server_tls, "/portal", cert, headers=with_cookie)
    assert again.status == 200 and not again.header("Set-Cookie")  # the same session, cached
    brokers.revoke(cert.serial)
    response = await async_wait_for(
        lambda: get(gw, server_tls, "/portal", cert, headers=with_cookie),
        until=lambda r: r.status != 200,
        timeout=5,
        message="the revoked certificate's cached session still serves",
    )
    assert response.status == 403 and "gesperrt" in response.body
    # the session itself is over: without the certificate the cookie gives nothing
    after = await get(gw, server_tls, "/portal", headers=with_cookie)
    assert after.status == 401


async def test_certificate_session_ends_when_the_certificate_is_not_presented(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    gw = await start_gateway()
    cert = brokers.issue(brokers.user())
    first = await get(gw, server_tls, "/portal", cert)
    cookie = [("Cookie", f"__Host-brokergate={first.cookies['__Host-brokergate']}")]
    stolen = await get(gw, server_tls, "/portal", headers=cookie)  # cookie without certificate
    assert stolen.status == 401
    assert any(
        "__Host-brokergate=" in c and ("Max-Age=0" in c or "expires" in c.lower())
        for c in stolen.header("Set-Cookie")
    )
    replay = await get(gw, server_tls, "/portal", cert, headers=cookie)
    assert replay.status == 200 and replay.header("Set-Cookie")  # a NEW session, the old one ended


async def test_another_users_certificate_replaces_the_session(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    gw = await start_gateway()
    a = brokers.issue(brokers.user(email="a@example.org"))
    b = brokers.issue(brokers.user(email="b@example.org"))
    first = await get(gw, server_tls, "/portal", a)
    cookie = [("Cookie", f"__Host-brokergate={first.cookies['__Host-brokergate']}")]
    second = await get(gw, server_tls, "/portal", b, headers=cookie)
    assert second.echoed()["x-brokergate-email"] == ["b@example.org"]
    assert second.cookies["__Host-brokergate"] != first.cookies["__Host-brokergate"]


async def test_disabled_user_certificate_is_refused(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    from sqlalchemy import update

    from store import User, UserStatus, transaction

    gw = await start_gateway()
    user = brokers.user()
    cert = brokers.issue(user)
    assert (await get(gw, server_tls, "/portal", cert)).status == 200
    with transaction(brokers.sessions) as db:
        db.execute(update(User).where(User.id == user).values(status=UserStatus.DISABLED))
    response = await async_wait_for(
        lambda: get(gw, server_tls, "/portal", cert),
        until=lambda r: r.status != 200,
        timeout=5,
        message="the disabled user's certificate still serves",
    )
    assert response.status == 403 and "nicht aktiv" in response.body


SPOOFS = [
    ("X-Brokergate-User-Id", "999"),
    ("x-brokergate-level", "strong"),
    ("X-BROKERGATE-EMAIL", "ceo@example.org"),
    ("X_Brokergate_Broker_Number", "99/999/9999"),
    ("x_brokergate-method", "passkey"),
    ("X-Brokergate-Assertion", "eyJhbGciOiJub25lIn0.e30."),
    ("X-Brokergate-Something-New", "x"),
]


async def test_spoofed_identity_headers_never_reach_the_upstream(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    gw = await start_gateway(default_level=Level.ANONYMOUS)
    anonymous = await get(gw, server_tls, "/portal", headers=SPOOFS)
    assert anonymous.status == 200
    assert not [k for k in anonymous.echoed() if k.replace("_", "-").startswith(IDENTITY)]
    user = brokers.user(email="real@example.org")
    cert = brokers.issue(user)
    logged_in = (await get(gw, server_tls, "/portal", cert, headers=SPOOFS)).echoed()
    identity = {k: v for k, v in logged_in.items() if k.replace("_", "-").startswith(IDENTITY)}
    assert identity["x-brokergate-user-id"] == [str(user)]
    assert identity["x-brokergate-email"] == ["real@example.org"]
    assert "x-brokergate-something-new" not in identity
    assert all(len(v) == 1 for v in identity.values())
    assert not [k for k in identity if "_" in k]


TRICKS = [
    "/antrag",
    "//antrag",
    "/./antrag",
    "/ANTRAG",
    "/Antrag/x",
    "/public/../antrag",
    "/public/%2e%2e/antrag",
    "/public/%2E%2E/antrag",
    "/%61ntrag",
    "/public/..;/antrag",
    "/public;x/..;/antrag",
    "/public//..//antrag",
]


@pytest.mark.parametrize("target", TRICKS)
async def test_path_tricks_never_lower_the_level(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, target: str
) -> None:
    gw = await start_gateway(
        default_level=Level.ANONYMOUS,
        routes=(
            RouteRule(prefix="/antrag", level=Level.STRONG),
            RouteRule(prefix="/public", level=Level.ANONYMOUS),
        ),
    )
    response = await get(gw, server_tls, target)
    assert response.status == 401, (target, response.status)
    assert "Anmelden" in response.body


@pytest.mark.parametrize(
    "target",
    [
        "/public%2F..%2Fantrag",
        "/public/%252e%252e/antrag",
        "/antrag%00",
        "/public\\..\\antrag",
        "/a%5C..%5Cantrag",
    ],
)
async def test_ambiguous_paths_are_rejected(
    start_gateway, server_tls: ServerTLS, target: str
) -> None:
    gw = await start_gateway(
        default_level=Level.ANONYMOUS, routes=(RouteRule(prefix="/antrag", level=Level.STRONG),)
    )
    response = await get(gw, server_tls, target)
    assert response.status == 400, (target, response.status)
    assert "Ungültige Adresse" in response.body


async def test_forwarded_path_is_the_normalised_one(start_gateway, server_tls: ServerTLS) -> None:
    gw = await start_gateway(default_level=Level.ANONYMOUS)
    response = await get(gw, server_tls, "/a//b/./c/%2e%2e/d%20e?q=%2F&r=2")
    assert json.loads(response.body)["path"] == "/a/b/d%20e?q=%2F&r=2"  # query untouched


@pytest.mark.parametrize(
    "target",
    [
        "/x/../_gateway/login",
        "/_GATEWAY/unknown",
        "/_gateway/nothing-here",
        "//_gateway/login/../x",
    ],
)
async def test_reserved_prefix_is_never_forwarded(
    start_gateway, server_tls: ServerTLS, target: str
) -> None:
    gw = await start_gateway(default_level=Level.ANONYMOUS)
    response = await get(gw, server_tls, target)
    assert response.status in {200, 401, 404}
    assert '"headers"' not in response.body  # not the upstream's echo


async def test_healthz_and_static(start_gateway, server_tls: ServerTLS) -> None:
    gw = await start_gateway()
    health = await get(gw, server_tls, "/healthz")
    assert health.status == 200 and json.loads(health.body) == {"status": "ok"}
    css = await get(gw, server_tls, "/_gateway/static/gateway.css")
    assert css.status == 200 and "font" in css.body
    assert css.header("Strict-Transport-Security")


async def test_certificate_requires_password_disables_single_sign_on(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    gw = await start_gateway(certificate_requires_password=True)
    cert = brokers.issue(brokers.user())
    response = await get(gw, server_tls, "/portal", cert)
    assert response.status == 401 and "Anmelden" in response.body


async def test_logout_needs_csrf_and_ends_the_session(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    from gateway import SESSIONS

    gw = await start_gateway()
    user = brokers.user()
    new = gw.app[SESSIONS].start(user_id=user, level=Level.BASIC, method="password", now=clock())
    cookie = [("Cookie", f"__Host-brokergate={new.cookie}")]
    assert (await get(gw, server_tls, "/portal", headers=cookie)).status == 200
    form = [*cookie, ("Content-Type", "application/x-www-form-urlencoded")]
    refused = await get(
        gw, server_tls, "/_gateway/logout", method="POST", headers=form, body=b"csrf=wrong"
    )
    assert refused.status == 403
    assert (await get(gw, server_tls, "/portal", headers=cookie)).status == 200
    body = f"csrf={new.state.csrf_token}".encode()
    done = await get(gw, server_tls, "/_gateway/logout", method="POST", headers=form, body=body)
    assert done.status == 200 and "Abgemeldet" in done.body
    assert (await get(gw, server_tls, "/portal", headers=cookie)).status == 401


async def test_idle_session_needs_a_new_login(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    from gateway import SESSIONS

    gw = await start_gateway(inactivity_exempt_paths=("/poll",), default_level=Level.BASIC)
    new = gw.app[SESSIONS].start(
        user_id=brokers.user(), level=Level.BASIC, method="password", now=clock()
    )
    cookie = [("Cookie", f"__Host-brokergate={new.cookie}")]
    for _ in range(3):  # background polling does not keep the session alive
        clock.advance(dt.timedelta(minutes=6))
        response = await get(gw, server_tls, "/poll/status", headers=cookie)
    assert response.status == 401  # 18 minutes without activity


async def test_twofa_prompt_and_not_now(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    from gateway import SESSIONS

    deadline = (clock() + dt.timedelta(days=30)).isoformat()
    gw = await start_gateway(
        routes=(RouteRule(prefix="/antrag", level=Level.STRONG),), twofa_deadline=deadline
    )
    new = gw.app[SESSIONS].start(
        user_id=brokers.user(), level=Level.BASIC, method="password", now=clock()
    )
    cookie = [("Cookie", f"__Host-brokergate={new.cookie}")]
    prompt = await get(gw, server_tls, "/antrag", headers=cookie)
    assert prompt.status == 403 and "Nicht jetzt" in prompt.body
    form = [*cookie, ("Content-Type", "application/x-www-form-urlencoded")]
    body = f"csrf={new.state.csrf_token}&next=/antrag".encode()
    skipped = await get(
        gw, server_tls, "/_gateway/2fa/not-now", method="POST", headers=form, body=body
    )
    assert skipped.status == 303 and skipped.header("Location") == ["/antrag"]
    assert (await get(gw, server_tls, "/antrag", headers=cookie)).status == 200
    clock.advance(dt.timedelta(days=31))  # after the deadline: step-up, no grace
    new2 = gw.app[SESSIONS].start(
        user_id=brokers.user(), level=Level.BASIC, method="password", now=clock()
    )
    late = await get(
        gw, server_tls, "/antrag", headers=[("Cookie", f"__Host-brokergate={new2.cookie}")]
    )
    assert late.status == 403 and "Zusätzliche Anmeldung" in late.body


async def test_metrics_count_handshakes_and_certificate_logins(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    from gateway import METRICS

    gw = await start_gateway()
    metrics = gw.app[METRICS]
    cert = brokers.issue(brokers.user())
    assert (await get(gw, server_tls, "/portal", cert)).status == 200
    await get(gw, server_tls, "/portal")
    clock.advance(dt.timedelta(days=800))
    await get(gw, server_tls, "/portal", cert)

    def value(name: str, **labels: str) -> float:
        found = metrics.registry.get_sample_value(name, labels)
        return found or 0.0

    assert value("brokergate_handshakes_total", result="valid") == 1
    assert value("brokergate_handshakes_total", result="none") == 1
    assert value("brokergate_handshakes_total", result="expired") == 1
    assert value("brokergate_logins_total", method="certificate", outcome="success") == 1


async def test_certificate_as_second_factor_after_a_password(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    """certificate_requires_password: a password session + the certificate = strong."""
    from gateway import SESSIONS

    gw = await start_gateway(
        certificate_requires_password=True,
        routes=(RouteRule(prefix="/antrag", level=Level.STRONG),),
    )
    user = brokers.user(email="second@example.org")
    cert = brokers.issue(user)
    other = brokers.issue(brokers.user())
    password = gw.app[SESSIONS].start(
        user_id=user, level=Level.BASIC, method="password", now=clock()
    )
    cookie = [("Cookie", f"__Host-brokergate={password.cookie}")]
    basic = await get(gw, server_tls, "/antrag", headers=cookie)
    assert basic.status == 403  # basic is not enough
    wrong = await get(gw, server_tls, "/antrag", other, headers=cookie)
    assert wrong.status == 403  # another user's certificate is no second factor for this one
    strong = await get(gw, server_tls, "/antrag", cert, headers=cookie)
    assert strong.status == 200
    assert strong.echoed()["x-brokergate-level"] == ["strong"]
    assert strong.cookies["__Host-brokergate"] != password.cookie  # rotated on the level change
    rotated = [("Cookie", f"__Host-brokergate={strong.cookies['__Host-brokergate']}")]
    assert (
        await get(gw, server_tls, "/antrag", headers=rotated)
    ).status == 401  # bound to the cert


async def test_unreachable_upstream_gives_the_502_page(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    gw = await start_gateway(upstream_url=f"http://127.0.0.1:{closed}")
    cert = brokers.issue(brokers.user())
    response = await get(gw, server_tls, "/portal", cert)
    assert response.status == 502
    assert "Das Portal ist nicht erreichbar" in response.body


async def test_unreachable_store_stops_start_up(server_tls: ServerTLS) -> None:
    from aiohttp import web
    from sqlalchemy.exc import OperationalError

    from gateway import GatewaySettings, create_app

    app = create_app(
        settings=GatewaySettings(),
        store_url="postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2",
        secret_key=b"k" * 32,
        forward=lambda request, **kw: None,  # type: ignore[arg-type,return-value]
    )
    runner = web.AppRunner(app)
    with pytest.raises(OperationalError):
        await runner.setup()
    await runner.cleanup()


@pytest.mark.parametrize("target", ["/healthzX", "/.well-known/jwks.jsonx", "/_gateway/staticx"])
async def test_lookalikes_of_open_routes_are_not_open(
    start_gateway, server_tls: ServerTLS, target: str
) -> None:
    gw = await start_gateway()
    response = await get(gw, server_tls, target)
    assert response.status in {401, 404}, (target, response.status)
    assert '"headers"' not in response.body


async def test_fresh_login_routes(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    """fresh_within: a password login ages; a presented certificate is fresh on every request."""
    from gateway import SESSIONS

    gw = await start_gateway(
        routes=(
            RouteRule(prefix="/konto", level=Level.BASIC, fresh_within=dt.timedelta(minutes=10)),
        )
    )
    user = brokers.user()
    new = gw.app[SESSIONS].start(user_id=user, level=Level.BASIC, method="password", now=clock())
    cookie = [("Cookie", f"__Host-brokergate={new.cookie}")]
    assert (await get(gw, server_tls, "/konto", headers=cookie)).status == 200
    clock.advance(dt.timedelta(minutes=11))
    stale = await get(gw, server_tls, "/konto", headers=cookie)
    assert stale.status == 403 and "Zusätzliche Anmeldung" in stale.body
    cert = brokers.issue(user)
    assert (await get(gw, server_tls, "/konto", cert)).status == 200
    clock.advance(dt.timedelta(minutes=9))  # the certificate session is 9+ min old ...
    first = await get(gw, server_tls, "/konto", cert)
    clock.advance(dt.timedelta(minutes=5))
    assert first.status == 200 and (await get(gw, server_tls, "/konto", cert)).status == 200


async def test_crl_distribution_point_is_served_anonymously(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    from cryptography import x509

    gw = await start_gateway()
    cert = brokers.issue(brokers.user())
    response = await get(gw, server_tls, "/_gateway/crl/1.crl")  # no client certificate
    assert response.status == 200
    assert response.header("content-type") == ["application/pkix-crl"]
    issuing = brokers.authority.crls()  # PEM of the same CRL, from the CA
    served = x509.load_der_x509_crl(response.body_bytes)
    assert served == x509.load_pem_x509_crl(issuing[1])
    assert served.get_revoked_certificate_by_serial_number(int(cert.serial, 16)) is None
    brokers.revoke(cert.serial)
    again = x509.load_der_x509_crl((await get(gw, server_tls, "/_gateway/crl/1.crl")).body_bytes)
    assert again.get_revoked_certificate_by_serial_number(int(cert.serial, 16)) is not None
    assert (await get(gw, server_tls, "/_gateway/crl/9.crl")).status == 404
    assert (await get(gw, server_tls, "/_gateway/crl/x.crl")).status == 404


async def test_certificate_parsed_once_across_connections(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A browser keeps several connections that present the same certificate; requests
    alternating between them must not parse it again each time (a cache that held only the
    last connection's DER object did, on every request)."""
    import aiohttp
    from cryptography.hazmat.primitives.serialization import Encoding

    import gateway.auth._presented as auth

    gw = await start_gateway()
    cert = brokers.issue(brokers.user())
    der = cert.certificate.public_bytes(Encoding.DER)
    real = auth.x509.load_der_x509_certificate
    parses: list[bytes] = []

    def counting(data: bytes, *args: Any) -> Any:
        if data == der:
            parses.append(data)
        return real(data, *args)

    monkeypatch.setattr(auth.x509, "load_der_x509_certificate", counting)
    context = client_context(server_tls.ca, cert)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=1)) as first,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=1)) as second,
    ):
        for _ in range(5):
            for client in (first, second):  # two keep-alive connections, interleaved
                async with client.get(gw.url + "/portal") as response:
                    assert response.status == 200
                    assert (await response.json())["headers"]  # the upstream's echo
    assert len(parses) == 1
