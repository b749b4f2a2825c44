"""The per-connection decision memo (issue 11): a reused allow never outlives what it was
made on, and is never shared between sessions or routes.

Every test warms a keep-alive connection until its requests are answered from the memo
(``DecisionMemos.hits`` moves), then changes one thing and checks the very next request on
that connection. Where today's bound is the refresh round (revocation, retire,
deactivation, a logout on another replica) the test runs that round itself
(``TrustCache.refresh``, ``Sessions.refresh_cached``) instead of waiting for the task;
deadlines are reached by moving the injected clock. The refresh task runs as well (every
2 s): it can only end an entry sooner, so no assertion below depends on it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy import update

from gateway import SESSIONS, RouteRule
from gateway.auth._decision_memo import (
    DECISION_MEMO,
    ENTRIES_PER_CONNECTION,
    AllowMemo,
    DecisionMemos,
    MemoBasis,
    allow_until,
)
from gateway.auth._request_state import TRUST
from gateway.auth._route_policy import Requirement
from gateway.auth._session_rules import SessionState
from gateway.auth._sessions import Sessions
from store import Level, User, UserStatus, transaction
from tests.gateway.conftest import Brokers, ClientCert, RunningGateway, ServerTLS
from tests.gateway.helpers import client_context
from tests.polling import async_wait_for

COOKIE = "__Host-brokergate"
ROUTES = (
    RouteRule(prefix="/strong", level=Level.STRONG),
    RouteRule(prefix="/fresh", level=Level.BASIC, fresh_within=dt.timedelta(minutes=5)),
    RouteRule(prefix="/orv", level=Level.BASIC, right="ORV"),
)
SETTINGS: dict[str, Any] = {
    "routes": ROUTES,
    "default_level": Level.BASIC,
    "revocation_refresh_interval": dt.timedelta(seconds=2),
}


@dataclass
class Reply:
    status: int
    body: str
    set_cookie: list[str]

    def echoed(self, name: str) -> list[str]:
        """An identity header as the upstream echo received it."""
        headers = json.loads(self.body)["headers"]
        return [v for k, v in headers if k.lower() == f"x-brokergate-{name}"]


class KeepAlive:
    """One keep-alive TLS connection (aiohttp's client, one connection, no cookie jar: each
    request carries the cookie the test gives it)."""

    def __init__(self, gw: RunningGateway, server_tls: ServerTLS, cert: ClientCert | None = None):
        self.url = gw.url
        self.memos = gw.app[DECISION_MEMO]
        connector = aiohttp.TCPConnector(ssl=client_context(server_tls.ca, cert), limit=1)
        self.client = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar()
        )

    async def get(
        self, target: str = "/portal", cookie: str | None = None, *, navigate: bool = False
    ) -> Reply:
        headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
        if navigate:
            headers["Sec-Fetch-Mode"] = "navigate"
        async with self.client.get(
            self.url + target, headers=headers, allow_redirects=False
        ) as response:
            return Reply(
                response.status, await response.text(), response.headers.getall("Set-Cookie", [])
            )

    async def warm(self, target: str = "/portal", cookie: str | None = None) -> Reply:
        """Requests until one is answered from the memo (an entry exists and holds)."""
        for _ in range(6):
            before = self.memos.hits
            reply = await self.get(target, cookie)
            assert reply.status == 200, reply.body[:300]
            if self.memos.hits == before + 1:
                return reply
        raise AssertionError(f"{target} was never answered from the memo")

    async def close(self) -> None:
        await self.client.close()


def cookie_of(reply: Reply) -> str:
    """The session cookie a reply sets."""
    (value,) = [c.split(";")[0].split("=", 1)[1] for c in reply.set_cookie if c.startswith(COOKIE)]
    return value


async def login(gw: RunningGateway, user: int, clock: Any, level: Level = Level.BASIC) -> Any:
    return await asyncio.to_thread(
        gw.app[SESSIONS].start, user_id=user, level=level, method="password", now=clock()
    )


async def refresh_round(gw: RunningGateway) -> None:
    """One round of the refresh task, run now."""
    await asyncio.to_thread(gw.app[TRUST].refresh)
    await asyncio.to_thread(gw.app[SESSIONS].refresh_cached)


async def test_revocation_ends_the_memoised_allow_with_the_refresh_round(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS
) -> None:
    """Today's bound is the trust refresh; with the memo it is the same round."""
    gw = await start_gateway(**SETTINGS)
    cert = brokers.issue(brokers.user())
    conn = KeepAlive(gw, server_tls, cert)
    try:
        cookie = cookie_of(await conn.get())  # the certificate's single sign-on
        await conn.warm(cookie=cookie)
        brokers.revoke(cert.serial)
        await refresh_round(gw)
        hits = conn.memos.hits
        refused = await conn.get(cookie=cookie)
        assert refused.status == 403 and "gesperrt" in refused.body
        assert conn.memos.hits == hits
    finally:
        await conn.close()


async def test_retire_ends_the_memoised_allow_with_the_refresh_round(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS
) -> None:
    gw = await start_gateway(**SETTINGS)
    cert = brokers.issue(brokers.user())
    conn = KeepAlive(gw, server_tls, cert)
    try:
        cookie = cookie_of(await conn.get())
        await conn.warm(cookie=cookie)
        brokers.authority.rotate("test")
        brokers.authority.retire(1, "test", force=True)
        await refresh_round(gw)
        refused = await conn.get(cookie=cookie)
        assert refused.status == 403 and not refused.body.startswith("{")
    finally:
        await conn.close()


async def test_a_due_renewal_interstitial_is_never_skipped(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    """Issue 15: within the reminder window the first page load after a certificate login
    shows the renewal page; script requests before it are not memoised past it."""
    gw = await start_gateway(**SETTINGS)
    cert = brokers.issue(brokers.user())
    not_after = cert.certificate.not_valid_after_utc
    conn = KeepAlive(gw, server_tls, cert)
    try:
        cookie = cookie_of(await conn.get())
        await conn.warm(cookie=cookie)  # before the window: memoised
        clock.now = not_after - dt.timedelta(days=30)  # inside the window now
        cookie = cookie_of(await conn.get())  # the old session is over: a new sign-on
        for _ in range(4):  # a script's requests: allowed, never memoised
            hits = conn.memos.hits
            assert (await conn.get(cookie=cookie)).status == 200
            assert conn.memos.hits == hits
        page = await conn.get(cookie=cookie, navigate=True)
        assert page.status == 200 and page.body.startswith("<!doctype html>")  # ours
        await conn.warm(cookie=cookie)  # shown once: from now on memoised again
    finally:
        await conn.close()


async def test_deactivation_is_refused_on_the_next_request(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    """Issue 13: the login-refused page, with the refresh round that brings the change."""
    gw = await start_gateway(**SETTINGS)
    user = brokers.user()
    new = await login(gw, user, clock)
    conn = KeepAlive(gw, server_tls)
    try:
        await conn.warm(cookie=new.cookie)
        with transaction(brokers.sessions) as db:
            db.execute(update(User).where(User.id == user).values(status=UserStatus.DISABLED))
        await refresh_round(gw)
        refused = await conn.get(cookie=new.cookie)
        assert refused.status == 403 and "nicht aktiv" in refused.body
    finally:
        await conn.close()


async def test_logout_here_and_on_another_replica(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    gw = await start_gateway(**SETTINGS)
    here = await login(gw, brokers.user(), clock)
    there = await login(gw, brokers.user(), clock)
    conn = KeepAlive(gw, server_tls)
    try:
        await conn.warm(cookie=here.cookie)
        await conn.warm(cookie=there.cookie)
        # here: the logout route of this replica, on the same connection
        async with conn.client.post(
            conn.url + "/_gateway/logout",
            headers={"Cookie": f"{COOKIE}={here.cookie}"},
            data={"csrf": here.state.csrf_token},
        ) as response:
            assert response.status == 200
        assert (await conn.get(cookie=here.cookie)).status == 401  # at once
        # another replica (its own session cache on the same store) ends the other session
        other = Sessions(factory=brokers.sessions, settings=gw.app[SESSIONS]._settings)
        await asyncio.to_thread(other.end, there.state.id, clock())
        await refresh_round(gw)  # today's bound: this replica's session refresh
        assert (await conn.get(cookie=there.cookie)).status == 401
    finally:
        await conn.close()


async def test_step_up_gives_a_new_session_and_the_old_cookie_nothing(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    gw = await start_gateway(**SETTINGS)
    basic = await login(gw, brokers.user(), clock)
    conn = KeepAlive(gw, server_tls)
    try:
        await conn.warm(cookie=basic.cookie)
        assert (await conn.get("/strong", basic.cookie)).status == 403  # step-up page
        strong = await asyncio.to_thread(
            gw.app[SESSIONS].elevate, basic.state, level=Level.STRONG, method="totp", now=clock()
        )
        assert (await conn.get(cookie=basic.cookie)).status == 401  # the old id is ended
        reply = await conn.warm("/strong", strong.cookie)
        assert reply.echoed("level") == ["strong"]
    finally:
        await conn.close()


async def test_freshness_window_ends_the_entry(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    gw = await start_gateway(**SETTINGS)
    new = await login(gw, brokers.user(), clock)
    conn = KeepAlive(gw, server_tls)
    try:
        await conn.warm("/fresh", new.cookie)
        clock.advance(dt.timedelta(minutes=5, seconds=1))
        stale = await conn.get("/fresh", new.cookie)
        assert stale.status == 403 and "Zusätzliche Anmeldung" in stale.body
    finally:
        await conn.close()


async def test_idle_expiry_and_the_touch_end_the_entry(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    gw = await start_gateway(**SETTINGS)  # idle timeout 15 min, touch every minute
    new = await login(gw, brokers.user(), clock)
    conn = KeepAlive(gw, server_tls)
    try:
        await conn.warm(cookie=new.cookie)
        clock.advance(dt.timedelta(minutes=1))  # the touch is due: decided (and written) afresh
        hits = conn.memos.hits
        assert (await conn.get(cookie=new.cookie)).status == 200
        assert conn.memos.hits == hits
        touched = gw.app[SESSIONS].cached(new.state.id)
        assert touched is not None and touched.last_seen_at == clock()
        await conn.warm(cookie=new.cookie)
        clock.advance(dt.timedelta(minutes=15, seconds=1))
        assert (await conn.get(cookie=new.cookie)).status == 401  # idle: logged out
    finally:
        await conn.close()


async def test_two_sessions_and_two_routes_on_one_connection_never_share(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    gw = await start_gateway(**SETTINGS)
    a_user = brokers.user(email="a@example.org")
    with transaction(brokers.sessions) as db:  # a holds no product right
        db.execute(update(User).where(User.id == a_user).values(rights=[]))
    a = await login(gw, a_user, clock)
    b = await login(gw, brokers.user(email="b@example.org"), clock, Level.STRONG)
    conn = KeepAlive(gw, server_tls)
    try:
        await conn.warm(cookie=a.cookie)
        await conn.warm(cookie=b.cookie)
        for _ in range(3):  # the cookie changes on every request of the connection
            assert (await conn.get(cookie=a.cookie)).echoed("email") == ["a@example.org"]
            assert (await conn.get(cookie=b.cookie)).echoed("email") == ["b@example.org"]
        # another route class: level and right are the route's, not the memoised one's
        assert (await conn.get("/strong", a.cookie)).status == 403
        assert (await conn.get("/strong", b.cookie)).status == 200
        no_right = await conn.get("/orv", a.cookie)
        assert no_right.status == 403 and "kann sie Ihnen geben" in no_right.body  # no-right page
        assert (await conn.get(cookie=None)).status == 401  # no cookie: no entry
        assert max(conn.memos.sizes()) <= ENTRIES_PER_CONNECTION
    finally:
        await conn.close()


async def test_entries_are_bounded_per_connection_and_freed_with_it(
    brokers: Brokers, start_gateway: Any, server_tls: ServerTLS, clock: Any
) -> None:
    gw = await start_gateway(**SETTINGS)
    conn = KeepAlive(gw, server_tls)
    memos: DecisionMemos = conn.memos
    cookies = [(await login(gw, brokers.user(), clock)).cookie for _ in range(6)]
    try:
        for cookie in cookies:
            await conn.warm(cookie=cookie)
        assert memos.sizes() == [ENTRIES_PER_CONNECTION]
    finally:
        await conn.close()

    async def connections() -> int:
        gc.collect()
        return memos.connections

    await async_wait_for(
        connections, until=lambda n: n == 0, timeout=5, message="the closed connection's memo"
    )


# --- the pure part


def _session(**kw: Any) -> SessionState:
    now = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)
    values: dict[str, Any] = {
        "id": "s",
        "user_id": 1,
        "level": Level.BASIC,
        "method": "password",
        "created_at": now,
        "authenticated_at": now,
        "last_seen_at": now,
        "absolute_expires_at": now + dt.timedelta(hours=10),
        "cert_fingerprint": None,
        "client_addr": None,
        "csrf_token": "t",
        "twofa_prompt_dismissed": False,
        "data": {},
        "ended_at": None,
    }
    values.update(kw)
    return SessionState(**values)


def test_allow_until_is_the_earliest_bound() -> None:
    from gateway.auth._certificate_identity import Identity

    session = _session()
    now = session.last_seen_at
    identity = Identity(
        user_id=1,
        broker_number="60/1/1",
        email="a@example.org",
        name="A",
        locale="de",
        level=Level.BASIC,
        method="password",
    )
    touch = dt.timedelta(minutes=1)

    def until(requirement: Requirement, **kw: Any) -> dt.datetime:
        return allow_until(
            session=session,
            identity=identity,
            requirement=requirement,
            now=now,
            touch_interval=touch,
            twofa_deadline=kw.get("deadline"),
            bounds=kw.get("bounds", ()),
        )

    basic = Requirement(level=Level.BASIC)
    assert until(basic) == now + touch
    assert until(basic, deadline=now + dt.timedelta(seconds=5)) == now + dt.timedelta(seconds=5)
    assert until(basic, deadline=now - dt.timedelta(seconds=5)) == now + touch  # passed
    fresh = Requirement(level=Level.BASIC, fresh_within=dt.timedelta(seconds=30))
    assert until(fresh) == now + dt.timedelta(seconds=30)
    assert until(basic, bounds=(None, now + dt.timedelta(seconds=2))) == now + dt.timedelta(
        seconds=2
    )
    memos = DecisionMemos(per_connection=1)

    class Connection:  # weak-referenceable, as an ssl.SSLObject is
        pass

    connection = Connection()
    basis = MemoBasis(connection=connection, cookie="c", requirement=basic, trust_generation=0)
    empty = AllowMemo(
        certificate=None,
        session=session,
        identity=identity,
        headers={},
        trust_generation=0,
        since=now,
        until=now,
    )
    memos.remember(basis, empty)  # an entry that holds for no instant is not kept
    assert memos.sizes() == []
