"""Two gateway instances on one PostgreSQL: shared sessions, revocation everywhere within 5 s.

Also: no store query per request for a known certificate in steady state.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import event

from gateway import SESSIONS, TLSSetupError
from gateway._state import FACTORY
from store import Level
from tests.gateway.conftest import Brokers, ServerTLS
from tests.gateway.helpers import client_context, raw_request
from tests.polling import async_wait_for

# Replicas share a database server: PostgreSQL only (the `postgres` marker skips it with a
# reason when the server is unreachable, and CI fails instead).
on_postgres = [
    pytest.mark.postgres,
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]


@on_postgres[0]
@on_postgres[1]
async def test_session_made_on_one_replica_works_on_the_other(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    a = await start_gateway()
    b = await start_gateway()
    user = brokers.user(email="two@example.org")
    # a password session made on A ...
    new = a.app[SESSIONS].start(user_id=user, level=Level.BASIC, method="password", now=clock())
    cookie = [("Cookie", f"__Host-brokergate={new.cookie}")]
    on_b = await raw_request(
        b.url, "/portal", context=client_context(server_tls.ca), headers=cookie
    )
    assert on_b.status == 200 and on_b.echoed()["x-brokergate-email"] == ["two@example.org"]
    # ... a certificate session made on A is reused by B (no new cookie)
    cert = brokers.issue(user)
    first = await raw_request(a.url, "/portal", context=client_context(server_tls.ca, cert))
    cert_cookie = [("Cookie", f"__Host-brokergate={first.cookies['__Host-brokergate']}")]
    second = await raw_request(
        b.url, "/portal", context=client_context(server_tls.ca, cert), headers=cert_cookie
    )
    assert second.status == 200 and not second.header("Set-Cookie")
    # logout everywhere on A ends the password session on B within the refresh interval
    a.app[SESSIONS].end_all_for_user(user, clock())
    gone = await async_wait_for(
        lambda: raw_request(
            b.url, "/portal", context=client_context(server_tls.ca), headers=cookie
        ),
        until=lambda r: r.status != 200,
        timeout=5,
        message="replica B still serves the session that A ended",
    )
    assert gone.status == 401


@on_postgres[0]
@on_postgres[1]
async def test_revocation_on_one_replica_is_enforced_by_the_other_within_5s(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    a = await start_gateway()
    b = await start_gateway()
    cert = brokers.issue(brokers.user())
    context = client_context(server_tls.ca, cert)
    assert (await raw_request(a.url, "/portal", context=context)).status == 200
    assert (await raw_request(b.url, "/portal", context=context)).status == 200
    brokers.revoke(cert.serial)  # the CA writes the store; B has the certificate cached
    response = await async_wait_for(
        lambda: raw_request(b.url, "/portal", context=context),
        until=lambda r: r.status != 200,
        timeout=5.0,
        message="replica B still accepts the certificate revoked through the CA",
    )
    assert response.status == 403 and "gesperrt" in response.body


async def test_known_certificate_costs_no_query_per_request(
    brokers: Brokers, start_gateway, server_tls: ServerTLS
) -> None:
    gw = await start_gateway(revocation_refresh_interval=dt.timedelta(seconds=2))
    cert = brokers.issue(brokers.user())
    context = client_context(server_tls.ca, cert)
    first = await raw_request(gw.url, "/portal", context=context)
    cookie = [("Cookie", f"__Host-brokergate={first.cookies['__Host-brokergate']}")]
    await raw_request(gw.url, "/portal", context=context, headers=cookie)  # warm
    statements: list[str] = []
    engine = gw.app[FACTORY].kw["bind"]

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(20):
            response = await raw_request(gw.url, "/portal", context=context, headers=cookie)
            assert response.status == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    per_request = [
        s for s in statements if "web_sessions" in s or "certificates" in s or "users" in s
    ]
    # at most the polling refresh (every 2 s) may have run meanwhile, never one per request
    print(f"{len(per_request)} store statements for 20 requests")
    assert len(per_request) < 10, per_request


def test_staleness_bound_must_stay_below_5s() -> None:
    from gateway import GatewaySettings, create_app

    with pytest.raises(ValueError, match="below 5s"):
        create_app(
            settings=GatewaySettings(),
            store_url="sqlite://",
            secret_key=b"x" * 32,
            forward=lambda *a, **k: None,
            max_staleness=dt.timedelta(seconds=5),  # type: ignore[arg-type,return-value]
        )
    assert TLSSetupError  # exported


async def test_cookieless_certificate_client_reuses_one_session(
    brokers: Brokers, start_gateway, server_tls: ServerTLS, clock
) -> None:
    """curl, API clients and load generators keep no cookies: still one session, not one per
    request, and one assertion signature per identity within the reuse window."""
    from sqlalchemy import func, select

    from store import WebSession

    gw = await start_gateway()
    cert = brokers.issue(brokers.user())
    context = client_context(server_tls.ca, cert)
    responses = [await raw_request(gw.url, "/portal", context=context) for _ in range(5)]
    assert {r.status for r in responses} == {200}
    assert len({r.cookies["__Host-brokergate"] for r in responses}) == 1
    with brokers.sessions() as db:
        assert db.scalar(select(func.count()).select_from(WebSession)) == 1
    assertions = {r.echoed()["x-brokergate-assertion"][0] for r in responses}
    assert len(assertions) == 1
    clock.advance(dt.timedelta(seconds=6))
    later = await raw_request(gw.url, "/portal", context=context)
    assert later.echoed()["x-brokergate-assertion"][0] not in assertions  # signed anew
