"""Fixtures of the gateway tests: a PKI in the store, a real echo upstream, a real TLS gateway.

Everything runs on 127.0.0.1 with real TLS. The gateway's clock is the ``clock`` fixture
(FakeClock): tests move it instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority, load_trust_material
from gateway import GatewaySettings, create_app, create_server_context
from gateway._metrics import GatewayMetrics
from gateway.proxy._forwarder import ProxyForwarder
from gateway.tls._proxy_protocol import ProxyProtocolSite
from store import RevocationReason, User
from tests.conftest import TEST_SECRET_KEY, password_mail_for

SECRET = TEST_SECRET_KEY
EPOCH = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)  # the `clock` fixture's start


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "brokergate test"),
        ]
    )


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ca(
    cn: str, issuer: tuple[Any, x509.Name] | None, not_before: dt.datetime
) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    signing_key, issuer_name = issuer if issuer else (key, _name(cn))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=3650))
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=None if issuer is None else 0), critical=True
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
    return key, builder.sign(signing_key, hashes.SHA256())


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
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    server_ca_key, server_ca = _ca("test server CA", None, start)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(server_ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(server_ca_key, hashes.SHA256())
    )
    tls = ServerTLS(
        ca=folder / "server-ca.pem", cert=folder / "server.pem", key=folder / "server-key.pem"
    )
    tls.ca.write_text(_pem(server_ca))
    tls.cert.write_text(_pem(cert))
    tls.key.write_bytes(_key_pem(key))
    tls.key.chmod(0o600)
    return tls


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
        base = self.folder / f"broker-{self._count}"
        p12_path = base.with_suffix(".p12")
        p12_path.write_bytes(issued.pkcs12)
        cert_path = base.with_suffix(".pem")
        key_path = self.folder / f"broker-{self._count}-key.pem"
        cert_path.write_text(_pem(cert))
        key_path.write_bytes(_key_pem(key))
        key_path.chmod(0o600)
        return ClientCert(
            cert_path=cert_path,
            key_path=key_path,
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
    ca_key, ca_cert = _ca("Foreign Insurer Client CA", None, now - dt.timedelta(days=30))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Foreign Broker"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("erika@example.org")]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / "foreign.pem", folder / "foreign-key.pem"
    cert_path.write_text(_pem(cert))
    key_path.write_bytes(_key_pem(key))
    der = cert.public_bytes(serialization.Encoding.DER)
    ca_path = folder / "foreign-ca.pem"
    ca_path.write_text(_pem(ca_cert))
    return ClientCert(
        cert_path=cert_path,
        key_path=key_path,
        p12_path=folder / "foreign.p12",
        password="",
        serial=format(cert.serial_number, "x"),
        fingerprint=hashlib.sha256(der).hexdigest(),
        user_id=0,
        certificate=cert,
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
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
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
