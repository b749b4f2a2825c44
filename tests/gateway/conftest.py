"""Fixtures of the gateway tests: a PKI in the store, a real echo upstream, a real TLS gateway.

Everything runs on 127.0.0.1 with real TLS. The gateway's clock is the ``clock`` fixture
(FakeClock): tests move it instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority, load_trust_material
from gateway import GatewaySettings, create_app, create_server_context
from gateway._metrics import GatewayMetrics
from gateway.proxy._forwarder import ProxyForwarder
from gateway.tls import GatewaySite
from gateway.tls._proxy_protocol import ProxyProtocolSite
from gateway.tls._workers import ServeOptions
from store import RevocationReason, User
from tests.conftest import TEST_SECRET_KEY, password_mail_for
from tests.pki import TestCA, write_pem_files

SECRET = TEST_SECRET_KEY
EPOCH = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)  # the `clock` fixture's start


@dataclass(frozen=True, kw_only=True)
class ClientCert:
    """A broker certificate on disk, for ssl contexts, curl and openssl."""

    cert_path: Path
    key_path: Path
    p12_path: Path
    password: str
    serial: str
    fingerprint: str
    user_id: int
    certificate: x509.Certificate

    def ssl_context(self, server_ca: Path) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(server_ca))
        context.load_cert_chain(str(self.cert_path), str(self.key_path))
        return context


@dataclass(kw_only=True)
class ServerTLS:
    """The listener's certificate, from a separate server CA (as in production)."""

    ca: Path
    cert: Path
    key: Path


def make_server_tls(folder: Path) -> ServerTLS:
    now = dt.datetime.now(dt.UTC)
    server_ca = TestCA.root("test server CA", now=now)
    files = server_ca.server(now=now, addresses=("127.0.0.1",)).write(folder, "server")
    ca_file = server_ca.write_cert(folder / "server-ca.pem")
    return ServerTLS(ca=ca_file, cert=files.cert, key=files.key)


@pytest.fixture
def server_tls(tmp_path: Path) -> ServerTLS:
    return make_server_tls(tmp_path)


@dataclass(kw_only=True)
class Brokers:
    """Brokers and their certificates, made by the real CA (``authority`` fixture)."""

    authority: CertificateAuthority
    make_user: Callable[..., User]
    sessions: sessionmaker[Session]
    clock: Any
    folder: Path
    _count: int = 0

    def user(self, email: str | None = None, broker: str | None = None, **kw: Any) -> int:
        return self.make_user(email=email, broker=broker, **kw).id

    def issue(self, user_id: int, *, at: dt.datetime | None = None) -> ClientCert:
        """Issue through the CA; ``at`` moves the CA's clock for this issuance only."""
        saved = self.clock.now
        if at is not None:
            self.clock.now = at
        try:
            issued = self.authority.issue_certificate(user_id, "test:gateway")
        finally:
            self.clock.now = saved
        password = password_mail_for(self.sessions, issued.serial)
        key, cert, _extra = pkcs12.load_key_and_certificates(issued.pkcs12, password.encode())
        assert key is not None and cert is not None
        self._count += 1
        stem = f"broker-{self._count}"
        p12_path = self.folder / f"{stem}.p12"
        p12_path.write_bytes(issued.pkcs12)
        files = write_pem_files(self.folder, stem, [cert], key)
        return ClientCert(
            cert_path=files.cert,
            key_path=files.key,
            p12_path=p12_path,
            password=password,
            serial=issued.serial,
            fingerprint=issued.fingerprint_sha256,
            user_id=user_id,
            certificate=cert,
        )

    def revoke(self, serial: str) -> None:
        assert self.authority.revoke(serial, RevocationReason.KEY_COMPROMISE, "test:gateway")


@pytest.fixture
def brokers(
    authority: CertificateAuthority,
    make_user: Callable[..., User],
    sessions: sessionmaker[Session],
    clock: Any,
    tmp_path: Path,
) -> Brokers:
    return Brokers(
        authority=authority, make_user=make_user, sessions=sessions, clock=clock, folder=tmp_path
    )


def foreign_certificate(folder: Path) -> ClientCert:
    """A client certificate of another insurer's CA (valid, EKU clientAuth, not ours)."""
    now = dt.datetime.now(dt.UTC)
    foreign_ca = TestCA.root("Foreign Insurer Client CA", now=now).issuing(
        "Foreign Insurer Issuing CA", now=now
    )
    leaf = foreign_ca.broker(now=now, name="Foreign Broker", key_kind="rsa")
    files = leaf.write(folder, "foreign")
    foreign_ca.write_cert(folder / "foreign-ca.pem")
    der = leaf.certificate.public_bytes(serialization.Encoding.DER)
    return ClientCert(
        cert_path=files.cert,
        key_path=files.key,
        p12_path=folder / "foreign.p12",
        password="",
        serial=format(leaf.certificate.serial_number, "x"),
        fingerprint=hashlib.sha256(der).hexdigest(),
        user_id=0,
        certificate=leaf.certificate,
    )


# --- the upstream: echoes what it received


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_length": len(body),
        }
    )


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@dataclass(kw_only=True)
class RunningGateway:
    url: str
    app: web.Application
    runner: web.AppRunner
    tls: ssl.SSLContext


@pytest.fixture
async def start_gateway(
    authority: CertificateAuthority, server_tls: ServerTLS, db_url: str, upstream: str, clock: Any
) -> AsyncIterator[Callable[..., Any]]:
    """``await start_gateway(**settings)`` → RunningGateway on 127.0.0.1 with real TLS."""
    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> RunningGateway:
        overrides.setdefault("revocation_refresh_interval", dt.timedelta(seconds=0.2))
        overrides.setdefault("upstream_url", upstream)
        settings = GatewaySettings(**overrides)
        with authority.sessions() as db:
            issuing = list(load_trust_material(db).issuing_by_generation.values())
        tls = create_server_context(
            cert_chain=server_tls.cert, private_key=server_tls.key, client_ca_issuers=issuing
        )
        metrics = GatewayMetrics()
        forwarder = ProxyForwarder(settings, metrics=metrics)  # the real proxy (gw-proxy)
        app = create_app(
            settings=settings,
            store_url=db_url,
            secret_key=SECRET,
            forward=forwarder,
            clock=clock,
            tls_context=tls,
            metrics=metrics,
        )
        app.cleanup_ctx.append(forwarder.pool_context)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site: web.BaseSite
        if settings.proxy_protocol:  # behind an L4 balancer, as gateway.tls._workers does it
            site = ProxyProtocolSite(
                runner,
                "127.0.0.1",
                0,
                ssl_context=tls,
                trusted_proxies=settings.trusted_networks,
                header_timeout=settings.proxy_protocol_timeout.total_seconds(),
            )
        else:
            site = GatewaySite(  # the production listener, with the settings' bounds
                runner,
                "127.0.0.1",
                0,
                ssl_context=tls,
                limits=ServeOptions.from_settings(settings).limits,
                count_close=metrics.record_connection_closed,
            )
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return RunningGateway(url=f"https://127.0.0.1:{port}", app=app, runner=runner, tls=tls)

    yield start
    for runner in runners:
        await runner.cleanup()


def echoed_headers(body: str) -> dict[str, list[str]]:
    """The upstream echo's headers, lower-cased name → values."""
    result: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        result.setdefault(name.lower(), []).append(value)
    return result
