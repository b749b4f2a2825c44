"""Issue 13 in forward-auth mode: ``/_gateway/auth`` tells the front the firm's headers on
allow, and answers the same clear pages (403) as the standalone gateway for a user who may
not log in and for a route right the user lacks."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import FirmSettings, set_user_active, set_user_rights
from gateway._metrics import GatewayMetrics
from gateway._service import gateway_app_factory
from gateway._settings import GatewaySettings, RouteRule
from store import Level, User, transaction
from tests.conftest import TEST_SECRET_KEY
from tests.gateway_proxy._certs import PemPair
from tests.gateway_proxy.conftest import start_site
from tests.polling import async_wait_for

AUTH = "/_gateway/auth"
Start = Callable[..., Awaitable[str]]
ROUTES = (RouteRule(prefix="/antrag/orv", level=Level.BASIC, right="ORV"),)


@pytest.fixture
async def start(db_url: str, upstream_url: str, authority: Any) -> AsyncIterator[Start]:
    runners: list[web.AppRunner] = []

    async def run(**overrides: Any) -> str:
        values: dict[str, Any] = {
            "upstream_url": upstream_url,
            "terminator_format": "rfc9440",
            "forward_auth": True,
            "trusted_proxies": ("127.0.0.1/32",),
            "public_url": "https://127.0.0.1",
            "routes": ROUTES,
            "revocation_refresh_interval": timedelta(seconds=0.2),
            **overrides,
        }
        app = gateway_app_factory(
            settings=GatewaySettings(**values),
            store_url=db_url,
            secret_key=TEST_SECRET_KEY,
            firms=FirmSettings(),
        )(None, GatewayMetrics())
        runner, port = await start_site(app)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield run
    for runner in runners:
        await runner.cleanup()


def _client_cert(pem: PemPair) -> str:
    der = pem.certificate.public_bytes(serialization.Encoding.DER)
    return ":" + base64.b64encode(der).decode() + ":"


async def _ask(base: str, uri: str, pem: PemPair, language: str = "de") -> tuple[int, Any, str]:
    headers = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": uri,
        "X-Forwarded-Host": "portal",
        "Client-Cert": _client_cert(pem),
        "Accept-Language": language,
    }
    async with (
        aiohttp.ClientSession() as client,
        client.get(base + AUTH, headers=headers, allow_redirects=False) as resp,
    ):
        return resp.status, resp.headers.copy(), await resp.text()


def _erika(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as db:
        return db.scalars(select(User.id).where(User.email == "erika@example.org")).one()


async def test_allow_carries_the_firm_and_a_missing_right_gets_the_page(
    start: Start, broker_pem: PemPair, sessions: sessionmaker[Session], clock: Any
) -> None:
    base = await start()
    status, headers, _ = await _ask(base, "/antrag/orv/neu", broker_pem)
    assert status == 200
    assert headers["X-Brokergate-Role"] == "head"
    assert headers["X-Brokergate-Rights"] == "DIL,DIP,ORV"
    assert headers["X-Brokergate-Office-Number"] == headers["X-Brokergate-Head-Office-Number"]
    erika = _erika(sessions)
    with transaction(sessions) as db:
        user = db.get(User, erika)
        assert user is not None
        set_user_rights(db, user, ["DIP"], firms=FirmSettings(), now=clock(), actor="test")
    status, headers, body = await async_wait_for(
        lambda: _ask(base, "/antrag/orv/neu", broker_pem, "en"),
        until=lambda r: r[0] != 200,
        timeout=5,
        message="the front is still allowed ORV without the right",
    )
    assert status == 403 and headers["Cache-Control"] == "no-store"
    orv = FirmSettings().product("ORV").name("en")
    assert f"You do not have permission for {orv}." in body
    assert "Your broker support can give it to you." in body  # the firm's own head user
    assert "X-Brokergate-Rights" not in headers  # SECURITY: nothing to copy on a refusal


async def test_a_deactivated_users_certificate_gets_the_refusal_page(
    start: Start, broker_pem: PemPair, sessions: sessionmaker[Session], clock: Any
) -> None:
    base = await start()
    assert (await _ask(base, "/home", broker_pem))[0] == 200
    with transaction(sessions) as db:
        user = db.get(User, _erika(sessions))
        assert user is not None
        set_user_active(db, user, False, now=clock(), actor="test")
    status, headers, body = await async_wait_for(
        lambda: _ask(base, "/home", broker_pem),
        until=lambda r: r[0] != 200,
        timeout=5,
        message="the front is still allowed a deactivated user's certificate",
    )
    assert status == 403 and headers["Cache-Control"] == "no-store"
    assert "Ihr Zugang ist deaktiviert." in body
    assert "Bitte wenden Sie sich an Ihre Maklerbetreuung." in body
    assert "Set-Cookie" not in headers and "X-Brokergate-User-Id" not in headers
