"""Forward-auth mode, issue 16: after an idle logout the login page answered to the front
says so — on the auth subrequest and on the front's fetch of the page — and keeps the
original path; a fresh visit, a forged cookie or a logout show no such notice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway import Sessions
from gateway._metrics import GatewayMetrics
from gateway._service import gateway_app_factory
from gateway._settings import GatewaySettings
from store import Level
from tests.conftest import TEST_SECRET_KEY, FakeClock
from tests.gateway_proxy.conftest import start_site

AUTH = "/_gateway/auth"
COOKIE = "__Host-brokergate"
NOTICE = "Sie wurden nach 15 Minuten ohne Aktivität abgemeldet."


@pytest.fixture
async def base(
    db_url: str, upstream_url: str, authority: Any, clock: FakeClock
) -> AsyncIterator[tuple[str, GatewaySettings]]:
    settings = GatewaySettings(
        upstream_url=upstream_url,
        terminator_format="rfc9440",
        forward_auth=True,
        trusted_proxies=("127.0.0.1/32",),
        public_url="https://127.0.0.1",
    )
    app = gateway_app_factory(
        settings=settings, store_url=db_url, secret_key=TEST_SECRET_KEY, clock=clock
    )(None, GatewayMetrics())
    runner, port = await start_site(app)
    yield f"http://127.0.0.1:{port}", settings
    await runner.cleanup()


async def _ask(base: str, cookie: str | None, *, page: bool = False) -> tuple[int, str]:
    headers = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/antrag?x=1",
        "X-Forwarded-Host": "portal",
        "Accept-Language": "de",
    }
    if page:
        headers["X-Brokergate-Page"] = "1"  # nginx's @brokergate_page fetch
    cookies = {COOKIE: cookie} if cookie else None
    async with (
        aiohttp.ClientSession(cookies=cookies) as client,
        client.get(base + AUTH, headers=headers, allow_redirects=False) as resp,
    ):
        return resp.status, await resp.text()


async def test_the_front_gets_the_idle_notice_on_both_requests(
    base: tuple[str, GatewaySettings],
    sessions: sessionmaker[Session],
    make_user: Any,
    clock: FakeClock,
) -> None:
    url, settings = base
    store = Sessions(factory=sessions, settings=settings)
    user_id = make_user(email="fa@example.org").id
    login = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    status, _ = await _ask(url, login.cookie)
    assert status == 200
    clock.advance(timedelta(minutes=16))
    status, text = await _ask(url, login.cookie)  # the auth subrequest: idle, ended here
    assert status == 401 and NOTICE in text
    assert 'name="back" value="/antrag?x=1"' in text  # the page is the portal path's
    status, text = await _ask(url, login.cookie, page=True)  # the front fetches the page
    assert status == 401 and NOTICE in text

    # A logged-out session (logout) and a fresh visit or a forged cookie: no notice.
    other = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    store.end(other.state.id, clock())
    for cookie in (other.cookie, None, "A" * 43):
        status, text = await _ask(url, cookie)
        assert status == 401 and "ohne Aktivität" not in text, cookie


async def test_a_page_fetch_that_is_now_allowed_sends_the_browser_back(
    base: tuple[str, GatewaySettings],
    sessions: sessionmaker[Session],
    make_user: Any,
    clock: FakeClock,
) -> None:
    """Issue 18: nginx asks for the refusal's page after a first decision said no; when the
    second decision says yes (the store came back in between), the browser must not get an
    empty 200 but be sent back to where it was going."""
    url, settings = base
    store = Sessions(factory=sessions, settings=settings)
    user_id = make_user(email="back@example.org").id
    login = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    headers = {
        "X-Forwarded-Method": "POST",
        "X-Forwarded-Uri": "/antrag?x=1",
        "X-Forwarded-Host": "portal",
        "X-Brokergate-Page": "1",
    }
    async with (
        aiohttp.ClientSession(cookies={COOKIE: login.cookie}) as client,
        client.get(url + AUTH, headers=headers, allow_redirects=False) as resp,
    ):
        assert resp.status == 307  # keeps the method and body of the broker's request
        assert resp.headers["Location"] == "/antrag?x=1"
        assert "no-store" in resp.headers["Cache-Control"]
        assert "X-Brokergate-Level" not in resp.headers  # identity goes to the portal only
    # a request line such as "GET //evil.example/x" must not become an open redirect
    async with (
        aiohttp.ClientSession(cookies={COOKIE: login.cookie}) as client,
        client.get(
            url + AUTH,
            headers={**headers, "X-Forwarded-Uri": "//evil.example/x"},
            allow_redirects=False,
        ) as resp,
    ):
        assert resp.status == 307 and resp.headers["Location"] == "/"
