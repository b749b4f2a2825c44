"""A proxied WebSocket does not outlive the session that opened it (gateway.proxy._websocket_guard).

Real TLS on 127.0.0.1, certificates from our CA, a real aiohttp upstream with a WebSocket
echo that records how its leg ended. Expiry is by the ``clock`` fixture; waits are bounded
receives, never sleeps for a deadline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import WSMsgType
from sqlalchemy import select

from ca import set_office_active
from gateway import SESSIONS
from store import Level, User, UserStatus, WebSession, transaction
from tests.gateway.conftest import Brokers, ServerTLS
from tests.gateway.helpers import (
    RawResponse,
    UpstreamCloses,
    client_context,
    raw_request,
    websocket_upstream,
)
from tests.polling import async_holds_for, async_wait_for


@pytest.fixture
def upstream_closes() -> UpstreamCloses:
    return asyncio.Queue()


@pytest.fixture
async def upstream(upstream_closes: UpstreamCloses) -> AsyncIterator[str]:
    """Overrides the gateway tests' echo upstream: the same, plus a WebSocket echo at /ws…"""
    async with websocket_upstream(upstream_closes) as url:
        yield url


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


async def _open(
    client: aiohttp.ClientSession,
    url: str,
    context: Any,
    *,
    cookie: str | None = None,
    path: str = "/ws",
) -> aiohttp.ClientWebSocketResponse:
    headers = {"Cookie": f"__Host-brokergate={cookie}"} if cookie else {}
    ws = await client.ws_connect(url + path, ssl=context, headers=headers, timeout=_WS_TIMEOUT)
    hello = json.loads((await ws.receive(timeout=5)).data)
    assert hello["level"] in {"strong", "basic", "restricted"}
    return ws


_WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)


async def _echo(ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
    await ws.send_str(text)
    answer = await ws.receive(timeout=5)
    assert answer.type is WSMsgType.TEXT and answer.data == "echo:" + text, answer


async def _stays_open(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> None:
    """Echo every 0.1 s for ``seconds`` (several guard checks): a close frame from the
    gateway would arrive instead of an echo. (No receive timeouts: aiohttp's client marks
    a socket abnormally closed after one.)"""
    rounds = itertools.count()

    async def echoed() -> bool:
        await _echo(ws, f"ping {next(rounds)}")
        return not ws.closed

    await async_holds_for(
        echoed, duration=seconds, interval=0.1, message="the gateway closed a healthy WebSocket"
    )


async def _closed_by_gateway(
    ws: aiohttp.ClientWebSocketResponse, *, within: float
) -> tuple[aiohttp.WSMessage, float]:
    """The next message (bounded wait) must be the gateway's close; returns it and when."""
    started = time.monotonic()
    message = await ws.receive(timeout=within)
    return message, time.monotonic() - started


def _assert_policy_close(message: aiohttp.WSMessage, reason: str) -> None:
    assert message.type is WSMsgType.CLOSE, message
    assert message.data == 1008, message  # policy violation
    assert message.extra == reason, message


async def _both_legs_closed(
    ws: aiohttp.ClientWebSocketResponse, reason: str, upstream_closes: UpstreamCloses
) -> None:
    """The gateway closed the browser's leg with 1008 and ``reason`` in under 5 s, and the
    upstream's leg with 1008 too."""
    message, seconds = await _closed_by_gateway(ws, within=5)
    _assert_policy_close(message, reason)
    assert seconds < 5.0
    assert await asyncio.wait_for(upstream_closes.get(), 5) == 1008


async def _password_session(gw: Any, brokers: Brokers, clock: Any, **kw: Any) -> Any:
    user = brokers.user(email=kw.pop("email", "ws@example.org"))
    return gw.app[SESSIONS].start(
        user_id=user, level=kw.pop("level", Level.BASIC), method="password", now=clock()
    )


async def _post_as(session: Any, url: str, path: str, server_tls: ServerTLS) -> RawResponse:
    """A form POST (with its CSRF token) to the gateway's own page at ``path`` as ``session``."""
    return await raw_request(
        url,
        path,
        method="POST",
        context=client_context(server_tls.ca),
        headers=[
            ("Cookie", f"__Host-brokergate={session.cookie}"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body=urlencode({"csrf": session.state.csrf_token}).encode(),
    )


async def test_revoking_the_certificate_closes_its_websocket_within_5s(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    client: aiohttp.ClientSession,
    upstream_closes: UpstreamCloses,
) -> None:
    # The production refresh interval (2 s), so the bound measured is the real one.
    gw = await start_gateway(revocation_refresh_interval=dt.timedelta(seconds=2))
    cert = brokers.issue(brokers.user())
    ws = await _open(client, gw.url, client_context(server_tls.ca, cert))
    await _echo(ws, "hello")
    brokers.revoke(cert.serial)  # through the CA: the store changes, the gateway's cache lags
    message, seconds = await _closed_by_gateway(ws, within=6)
    _assert_policy_close(message, "certificate revoked")
    assert seconds < 5.0
    # the upstream's leg is closed too, with the same code
    assert await asyncio.wait_for(upstream_closes.get(), 5) == 1008
    # and the certificate's session ended with it (as on a request)
    with brokers.sessions() as db:
        rows = list(db.scalars(select(WebSession)))
    assert rows and all(row.ended_at is not None for row in rows)


async def test_a_healthy_websocket_stays_open_across_many_checks(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    client: aiohttp.ClientSession,
    upstream_closes: UpstreamCloses,
) -> None:
    gw = await start_gateway()  # a check every 0.2 s
    cert = brokers.issue(brokers.user())
    ws = await _open(client, gw.url, client_context(server_tls.ca, cert))
    await _stays_open(ws, 1.5)  # ≥ 7 check intervals
    assert upstream_closes.empty()
    await ws.close()
    assert await asyncio.wait_for(upstream_closes.get(), 5) == 1000


async def test_logout_from_another_request_closes_the_websocket(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    client: aiohttp.ClientSession,
    upstream_closes: UpstreamCloses,
    clock: Any,
) -> None:
    gw = await start_gateway()
    new = await _password_session(gw, brokers, clock)
    ws = await _open(client, gw.url, client_context(server_tls.ca), cookie=new.cookie)
    await _echo(ws, "before")
    logout = await _post_as(new, gw.url, "/_gateway/logout", server_tls)
    assert logout.status == 200
    await _both_legs_closed(ws, "session ended", upstream_closes)


async def test_disabling_the_user_closes_the_websocket(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    client: aiohttp.ClientSession,
    upstream_closes: UpstreamCloses,
    clock: Any,
) -> None:
    gw = await start_gateway()
    new = await _password_session(gw, brokers, clock)
    ws = await _open(client, gw.url, client_context(server_tls.ca), cookie=new.cookie)
    await _echo(ws, "before")
    with transaction(brokers.sessions) as db:  # ops disable the account in the store
        user = db.get(User, new.state.user_id)
        assert user is not None
        user.status = UserStatus.DISABLED
    await _both_legs_closed(ws, "account disabled", upstream_closes)


async def test_deactivating_the_users_office_closes_the_websocket(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    client: aiohttp.ClientSession,
    upstream_closes: UpstreamCloses,
    clock: Any,
) -> None:
    """Issue 13: the user stays active, the office goes (ca.login_refusal says no)."""
    gw = await start_gateway()
    new = await _password_session(gw, brokers, clock)
    ws = await _open(client, gw.url, client_context(server_tls.ca), cookie=new.cookie)
    await _echo(ws, "before")
    with transaction(brokers.sessions) as db:
        user = db.get(User, new.state.user_id)
        assert user is not None
        set_office_active(db, user.office, False, now=clock(), actor="test")
    await _both_legs_closed(ws, "account disabled", upstream_closes)


async def test_absolute_expiry_closes_the_websocket(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    client: aiohttp.ClientSession,
    upstream_closes: UpstreamCloses,
    clock: Any,
) -> None:
    gw = await start_gateway(
        idle_timeout=dt.timedelta(minutes=15), absolute_timeout=dt.timedelta(hours=1)
    )
    cert = brokers.issue(brokers.user())
    ws = await _open(client, gw.url, client_context(server_tls.ca, cert))
    await _echo(ws, "before")
    # Activity every 10 minutes keeps the session from idling, not from its absolute end.
    for _ in range(5):
        clock.advance(dt.timedelta(minutes=10))
        await _echo(ws, "still here")
        await _stays_open(ws, 0.5)  # more than two checks
    clock.advance(dt.timedelta(minutes=11))  # 61 minutes after the start
    message, _ = await _closed_by_gateway(ws, within=5)
    _assert_policy_close(message, "session expired")
    assert await asyncio.wait_for(upstream_closes.get(), 5) == 1008


async def _touched(brokers: Brokers, session_id: str, at: dt.datetime) -> bool:
    """Wait (bounded) until the guard has recorded the client's activity in the store."""

    def last_seen() -> dt.datetime:
        with brokers.sessions() as db:
            row = db.get(WebSession, session_id)
            assert row is not None
            seen = row.last_seen_at
        return seen.replace(tzinfo=dt.UTC) if seen.tzinfo is None else seen

    await async_wait_for(
        last_seen,
        until=lambda seen: seen >= at,
        timeout=5,
        interval=0.1,
        message="the guard did not record the client's activity",
    )
    return True


@pytest.mark.parametrize("exempt", [False, True], ids=["counts", "exempt-path"])
async def test_client_messages_count_as_activity_unless_the_path_is_exempt(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    client: aiohttp.ClientSession,
    upstream_closes: UpstreamCloses,
    clock: Any,
    exempt: bool,
) -> None:
    gw = await start_gateway(
        idle_timeout=dt.timedelta(minutes=15), inactivity_exempt_paths=("/feed/",)
    )
    new = await _password_session(gw, brokers, clock)
    path = "/feed/ws" if exempt else "/ws"
    ws = await _open(client, gw.url, client_context(server_tls.ca), cookie=new.cookie, path=path)
    clock.advance(dt.timedelta(minutes=10))
    await _echo(ws, "typing")
    if not exempt:
        assert await _touched(brokers, new.state.id, clock())
    clock.advance(dt.timedelta(minutes=6))  # 16 minutes after the start, 6 after the message
    if exempt:
        message, _ = await _closed_by_gateway(ws, within=5)
        _assert_policy_close(message, "session idle")
        assert await asyncio.wait_for(upstream_closes.get(), 5) == 1008
    else:
        await _echo(ws, "still here")
        await _stays_open(ws, 0.5)  # more than two checks
        assert not ws.closed
        await ws.close()


async def test_upstream_messages_do_not_count_as_activity(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    client: aiohttp.ClientSession,
    clock: Any,
) -> None:
    """The hello the upstream pushes is not the broker's activity: idle after 15 minutes."""
    gw = await start_gateway(idle_timeout=dt.timedelta(minutes=15))
    new = await _password_session(gw, brokers, clock)
    ws = await _open(client, gw.url, client_context(server_tls.ca), cookie=new.cookie)
    clock.advance(dt.timedelta(minutes=16))
    message, _ = await _closed_by_gateway(ws, within=5)
    _assert_policy_close(message, "session idle")


async def test_a_fresh_login_route_closes_its_websocket_when_the_login_is_no_longer_fresh(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    client: aiohttp.ClientSession,
    clock: Any,
) -> None:
    """The route policy is asked again: what a request on that path would get."""
    from gateway import RouteRule

    gw = await start_gateway(
        routes=(RouteRule(prefix="/ws", level=Level.BASIC, fresh_within=dt.timedelta(minutes=5)),)
    )
    new = await _password_session(gw, brokers, clock)
    ws = await _open(client, gw.url, client_context(server_tls.ca), cookie=new.cookie)
    clock.advance(dt.timedelta(minutes=4))
    await _echo(ws, "fresh enough")
    clock.advance(dt.timedelta(minutes=2))
    message, _ = await _closed_by_gateway(ws, within=5)
    _assert_policy_close(message, "step-up required")


async def test_anonymous_websocket_on_an_anonymous_route_is_not_guarded(
    start_gateway: Any, server_tls: ServerTLS, client: aiohttp.ClientSession, clock: Any
) -> None:
    from gateway import RouteRule

    gw = await start_gateway(routes=(RouteRule(prefix="/ws", level=Level.ANONYMOUS),))
    ws = await client.ws_connect(gw.url + "/ws", ssl=client_context(server_tls.ca))
    assert json.loads((await ws.receive(timeout=5)).data)["level"] is None
    clock.advance(dt.timedelta(days=2))  # no session: nothing can expire
    await _echo(ws, "anyone")
    await _stays_open(ws, 0.5)  # more than two checks
    await ws.close()


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_logout_everywhere_and_revocation_on_one_replica_close_sockets_on_the_other(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    client: aiohttp.ClientSession,
    upstream_closes: UpstreamCloses,
    clock: Any,
) -> None:
    """Two replicas on one PostgreSQL, the production refresh interval: the sockets live on
    B, the logout and the revocation happen on A / through the CA."""
    a = await start_gateway(revocation_refresh_interval=dt.timedelta(seconds=2))
    b = await start_gateway(revocation_refresh_interval=dt.timedelta(seconds=2))
    new = await _password_session(a, brokers, clock, email="both@example.org")
    by_password = await _open(client, b.url, client_context(server_tls.ca), cookie=new.cookie)
    cert = brokers.issue(brokers.user(email="cert@example.org"))
    by_certificate = await _open(client, b.url, client_context(server_tls.ca, cert))
    await _echo(by_password, "one")
    await _echo(by_certificate, "two")

    everywhere = await _post_as(new, a.url, "/_gateway/logout-everywhere", server_tls)
    assert everywhere.status == 200
    message, seconds = await _closed_by_gateway(by_password, within=6)
    _assert_policy_close(message, "session ended")
    assert seconds < 5.0
    await _echo(by_certificate, "unaffected")

    brokers.revoke(cert.serial)
    message, seconds = await _closed_by_gateway(by_certificate, within=6)
    _assert_policy_close(message, "certificate revoked")
    assert seconds < 5.0
    closes = [await asyncio.wait_for(upstream_closes.get(), 5) for _ in range(2)]
    assert closes == [1008, 1008]
