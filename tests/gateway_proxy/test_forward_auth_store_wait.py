"""Forward-auth mode, issue 18: nginx asks twice for a refusal (``auth_request``, then its
``@brokergate_page`` fetch). When the first decision could not reach the store, it says so
(``X-Brokergate-Failure: store_unavailable``) and the page fetch that carries it gets the
503 page at once, without a second wait on the store: with SQLite locked by another writer
a broker waited up to twice the busy timeout behind nginx (tests/faults/test_sqlite_locked.py
is the end-to-end proof; this is the gateway's half)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
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
UNAVAILABLE_TITLE = "vorübergehend nicht möglich"  # de: the store_unavailable page


@pytest.fixture
def metrics() -> GatewayMetrics:
    """The metrics of the ``base`` gateway (one instance per test)."""
    return GatewayMetrics()


@pytest.fixture
async def base(
    db_url: str, upstream_url: str, authority: Any, clock: FakeClock, metrics: GatewayMetrics
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
    )(None, metrics)
    runner, port = await start_site(app)
    yield f"http://127.0.0.1:{port}", settings
    await runner.cleanup()


async def _ask(base: str, cookie: str, **extra: str) -> tuple[int, dict[str, str], str]:
    headers = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/antrag",
        "X-Forwarded-Host": "portal",
        "Accept-Language": "de",
        **extra,
    }
    async with (
        aiohttp.ClientSession(cookies={COOKIE: cookie}) as client,
        client.get(base + AUTH, headers=headers, allow_redirects=False) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.text()


async def test_a_decision_without_the_store_says_so_for_the_page_fetch(
    base: tuple[str, GatewaySettings],
    sessions: sessionmaker[Session],
    make_user: Any,
    clock: FakeClock,
) -> None:
    url, settings = base
    store = Sessions(factory=sessions, settings=settings)
    user_id = make_user(email="wait@example.org").id
    login = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    status, headers, _ = await _ask(url, login.cookie)
    assert status == 200 and "X-Brokergate-Failure" not in headers
    # a session the gateway has not seen yet (nothing cached): its decision reads the store
    login = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())

    # The store cannot answer for the session (its table gone: the gateway's read fails).
    with sessions() as db:
        db.execute(text("ALTER TABLE web_sessions RENAME TO web_sessions_away"))
        db.commit()
    try:
        status, headers, page = await _ask(url, login.cookie)
    finally:
        with sessions() as db:
            db.execute(text("ALTER TABLE web_sessions_away RENAME TO web_sessions"))
            db.commit()
    assert status == 403, page  # what nginx auth_request understands
    assert headers["X-Brokergate-Failure"] == "store_unavailable"
    assert UNAVAILABLE_TITLE in page


async def test_the_page_fetch_after_such_a_decision_does_not_ask_the_store_again(
    base: tuple[str, GatewaySettings],
    sessions: sessionmaker[Session],
    make_user: Any,
    clock: FakeClock,
) -> None:
    url, settings = base
    store = Sessions(factory=sessions, settings=settings)
    user_id = make_user(email="page@example.org").id
    login = store.start(user_id=user_id, level=Level.BASIC, method="password", now=clock())
    # The store is fine now: a decision would allow (and the page fetch would answer 307).
    # With the first decision's word the page is the 503 page, with its own status.
    status, headers, page = await _ask(
        url, login.cookie, **{"X-Brokergate-Page": "1", "X-Brokergate-Failure": "store_unavailable"}
    )
    assert status == 503 and UNAVAILABLE_TITLE in page, page
    assert not [name for name in headers if name.lower().startswith("x-brokergate-level")]
    # Only on the front's page fetch: on the decision itself the header means nothing
    # (nginx clears it there; a client's own is not believed), nor with another value.
    status, _, _ = await _ask(url, login.cookie, **{"X-Brokergate-Failure": "store_unavailable"})
    assert status == 200
    status, headers, _ = await _ask(
        url, login.cookie, **{"X-Brokergate-Page": "1", "X-Brokergate-Failure": "other"}
    )
    assert status == 307 and headers["Location"] == "/antrag"


async def test_one_store_failure_behind_nginx_is_counted_once(
    base: tuple[str, GatewaySettings],
    metrics: GatewayMetrics,
    clock: FakeClock,
    sessions: sessionmaker[Session],
    make_user: Any,
) -> None:
    """The decision counts the failure page; nginx's page fetch that carries the decision's
    word shows it again, but it is the same failure for the broker and for the alert."""
    url, settings = base

    def counted() -> float:
        value = metrics.registry.get_sample_value(
            "brokergate_failure_pages_total", {"page": "store_unavailable"}
        )
        return value or 0.0

    login = Sessions(factory=sessions, settings=settings).start(
        user_id=make_user(email="once@example.org").id,
        level=Level.BASIC,
        method="password",
        now=clock(),
    )
    with sessions() as db:
        db.execute(text("ALTER TABLE web_sessions RENAME TO web_sessions_away"))
        db.commit()
    try:
        status, headers, _ = await _ask(url, login.cookie)
        assert status == 403 and counted() == 1
        status, _, _ = await _ask(
            url,
            login.cookie,
            **{
                "X-Brokergate-Page": "1",
                "X-Brokergate-Failure": headers["X-Brokergate-Failure"],
            },
        )
        assert status == 503 and counted() == 1
    finally:
        with sessions() as db:
            db.execute(text("ALTER TABLE web_sessions_away RENAME TO web_sessions"))
            db.commit()
