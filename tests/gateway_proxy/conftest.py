"""Fixtures of the proxy/terminator/serving tests: a real upstream and gateway on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority
from gateway._settings import GatewaySettings
from tests.conftest import FakeClock, UserFactory, password_mail_for
from tests.gateway_proxy._apps import gateway_app, settings_for, upstream_app
from tests.gateway_proxy._certs import PemPair, own_ca_pair, pem_from_pkcs12

StartGateway = Callable[..., Awaitable[str]]


async def start_site(app: web.Application, **site_kwargs: Any) -> tuple[web.AppRunner, int]:
    # A short shutdown timeout: the stalling test handlers must not hold up teardown.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, **site_kwargs)
    await site.start()
    port: int = runner.addresses[0][1]
    return runner, port


@pytest.fixture
async def upstream_url() -> AsyncIterator[str]:
    """A real aiohttp upstream on loopback (see _apps.upstream_app for its routes)."""
    runner, port = await start_site(upstream_app())
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def start_gateway(upstream_url: str) -> AsyncIterator[StartGateway]:
    """``await start_gateway(**settings_overrides)`` → the gateway's base URL (plain HTTP)."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application | None = None, **overrides: Any) -> str:
        settings: GatewaySettings = settings_for(
            overrides.pop("upstream", upstream_url), **overrides
        )
        runner, port = await start_site(app or gateway_app(settings))
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def gateway_url(start_gateway: StartGateway) -> str:
    return await start_gateway()


@pytest.fixture
def clock() -> FakeClock:
    """Our CA signs with the injected clock, but nginx and OpenSSL check validity against the
    real one: start the fake clock at the real time so issued certificates are valid now."""
    return FakeClock(datetime.now(UTC) - timedelta(minutes=1))


@pytest.fixture(scope="session")
def server_pem(tmp_path_factory: pytest.TempPathFactory) -> PemPair:
    return own_ca_pair(tmp_path_factory.mktemp("tls"), "server", server=True)


@pytest.fixture
def broker_pem(
    authority: CertificateAuthority,
    make_user: UserFactory,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> PemPair:
    """A broker certificate from our CA, unpacked to PEM files."""
    user = make_user(email="erika@example.org")
    issued = authority.issue_certificate(user.id, "test:setup")
    password = password_mail_for(sessions, issued.serial)
    return pem_from_pkcs12(tmp_path / "broker", "broker", issued.pkcs12, password)
