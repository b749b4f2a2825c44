"""Certificate logins in the login history (issue 14): one login per session it makes.

Real TLS on loopback with certificates from our CA, the store parametrised (SQLite and
PostgreSQL); ``brokergate user show`` run as the real console script on the same store.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from gateway import SESSIONS
from store import Level, User, transaction
from tests.conftest import CliRunner
from tests.gateway.conftest import Brokers, ServerTLS
from tests.gateway.helpers import RawResponse, client_context, raw_request


async def get(
    gw: Any, server_tls: ServerTLS, cert: Any = None, cookie: str | None = None
) -> RawResponse:
    headers = [("Cookie", f"__Host-brokergate={cookie}")] if cookie else None
    return await raw_request(
        gw.url, "/portal", context=client_context(server_tls.ca, cert), headers=headers
    )


def history(brokers: Brokers, user_id: int) -> tuple[Any, ...]:
    with transaction(brokers.sessions) as db:
        user = db.get(User, user_id)
        assert user is not None
        return (
            user.last_login_at,
            user.last_login_method,
            user.previous_login_at,
            user.previous_login_method,
        )


async def test_a_certificate_sign_on_is_one_login(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    clock: Any,
    run_cli: CliRunner,
    db_url: str,
) -> None:
    gw = await start_gateway()
    user = brokers.user(email="zert@example.org")
    cert = brokers.issue(user)
    assert history(brokers, user) == (None, None, None, None)
    first = await get(gw, server_tls, cert)
    assert first.status == 200 and first.echoed()["x-brokergate-method"] == ["certificate"]
    signed_on = clock()
    assert history(brokers, user) == (signed_on, "certificate", None, None)

    # The requests on that session write no history: with its cookie, and without one
    # (a client that keeps no cookies gets the same session back).
    cookie = first.cookies["__Host-brokergate"]
    for _ in range(3):
        clock.advance(dt.timedelta(seconds=20))
        assert (await get(gw, server_tls, cert, cookie)).status == 200
        again = await get(gw, server_tls, cert)
        assert again.status == 200 and again.cookies["__Host-brokergate"] == cookie
    assert history(brokers, user) == (signed_on, "certificate", None, None)

    # What ops sees (issue 14: it said "last_login_at: -").
    shown = run_cli(
        "user", "show", "zert@example.org", "--json", env={"BROKERGATE_STORE__URL": db_url}
    )
    assert shown.code == 0, shown.err
    summary = json.loads(shown.out)
    assert summary["last_login_method"] == "certificate"
    assert dt.datetime.fromisoformat(summary["last_login_at"]) == signed_on


async def test_the_next_certificate_session_is_the_next_login(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    gw = await start_gateway()
    user = brokers.user()
    cert = brokers.issue(user)
    first = await get(gw, server_tls, cert)
    assert first.status == 200
    first_at = clock()
    # The broker logs out; the next visit with the certificate is a new session.
    cookie = first.cookies["__Host-brokergate"]
    state = gw.app[SESSIONS].peek(cookie, clock())
    assert state is not None
    gw.app[SESSIONS].end(state.id, clock())
    clock.advance(dt.timedelta(hours=3))
    second = await get(gw, server_tls, cert, cookie)
    assert second.status == 200 and second.cookies["__Host-brokergate"] != cookie
    assert history(brokers, user) == (clock(), "certificate", first_at, "certificate")


async def test_a_certificate_raising_a_password_session_continues_that_login(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    """certificate_requires_password: the password login was recorded when it was made;
    the certificate as its second factor is the same visit, not a second login."""
    gw = await start_gateway(certificate_requires_password=True)
    user = brokers.user()
    cert = brokers.issue(user)
    with transaction(brokers.sessions) as db:
        row = db.get(User, user)
        assert row is not None
        row.last_login_at, row.last_login_method = clock(), "password"
    password = gw.app[SESSIONS].start(
        user_id=user, level=Level.BASIC, method="password", now=clock()
    )
    clock.advance(dt.timedelta(seconds=5))
    strong = await get(gw, server_tls, cert, password.cookie)
    assert strong.status == 200 and strong.echoed()["x-brokergate-level"] == ["strong"]
    assert history(brokers, user) == (
        clock() - dt.timedelta(seconds=5),
        "password",
        None,
        None,
    )


async def test_a_certificate_raising_a_restricted_session_is_a_login(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    """A restricted session ("continue without email") recorded nothing: no factor."""
    gw = await start_gateway()
    user = brokers.user()
    cert = brokers.issue(user)
    restricted = gw.app[SESSIONS].start(
        user_id=user, level=Level.RESTRICTED, method="email-tan", now=clock()
    )
    clock.advance(dt.timedelta(seconds=5))
    strong = await get(gw, server_tls, cert, restricted.cookie)
    assert strong.status == 200 and strong.echoed()["x-brokergate-level"] == ["strong"]
    assert history(brokers, user) == (clock(), "certificate", None, None)
