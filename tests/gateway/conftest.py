"""Fixtures of the gateway tests: a PKI in the store, a real echo upstream, a real TLS gateway.

Everything runs on 127.0.0.1 with real TLS. The gateway's clock is the ``clock`` fixture
(FakeClock): tests move it instead of sleeping.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway import GatewaySettings, create_app, create_server_context
from gateway._identity_headers import is_identity_header
from store import (
    CAGeneration,
    CARoot,
    Certificate,
    CertificateStatus,
    GenerationStatus,
    Organisation,
    RootStatus,
    User,
    UserStatus,
    session_factory,
    transaction,
)

SECRET = b"test-secret-key-0123456789abcdef"
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
class Trust:
    """What ``ca.load_trust_material`` returns, read from the store by :func:`trust_loader`."""

    roots: list[x509.Certificate]
    intermediates: list[x509.Certificate]
    issuing_by_generation: dict[int, x509.Certificate]


def trust_loader(session: Session) -> Trust:
    roots = [
        x509.load_pem_x509_certificate(r.cert_pem.encode()) for r in session.scalars(select(CARoot))
    ]
    issuing = {
        g.id: x509.load_pem_x509_certificate(g.cert_pem.encode())
        for g in session.scalars(select(CAGeneration))
        if g.status is not GenerationStatus.RETIRED
    }
    return Trust(roots=roots, intermediates=list(issuing.values()), issuing_by_generation=issuing)


@dataclass(frozen=True, kw_only=True)
class ClientCert:
    """A broker certificate on disk, for ssl contexts, curl and openssl."""

    cert_path: Path
    key_path: Path
    serial: str
    fingerprint: str
    user_id: int
    certificate: x509.Certificate

    def ssl_context(self, server_ca: Path) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(server_ca))
        context.load_cert_chain(str(self.cert_path), str(self.key_path))
        return context


@dataclass(kw_only=True)
class PKI:
    """A root and issuing CA (generation 1) in the store, and a server certificate for TLS."""

    engine: Engine
    folder: Path
    root_key: Any = None
    root: x509.Certificate | None = None
    issuing_key: Any = None
    issuing: x509.Certificate | None = None
    server_ca: Path = field(default=Path())
    server_cert: Path = field(default=Path())
    server_key: Path = field(default=Path())
    _count: int = 0

    def setup(self) -> None:
        start = EPOCH - dt.timedelta(days=365)
        self.root_key, self.root = _ca("brokergate test Root CA", None, start)
        self.issuing_key, self.issuing = _ca(
            "brokergate test Broker CA G1", (self.root_key, self.root.subject), start
        )
        with transaction(session_factory(self.engine)) as db:
            root = CARoot(
                subject=self.root.subject.rfc4514_string(),
                cert_pem=_pem(self.root),
                key_pem_encrypted="unused in gateway tests",
                cross_cert_pem=None,
                status=RootStatus.ACTIVE,
                not_before=self.root.not_valid_before_utc,
                not_after=self.root.not_valid_after_utc,
                created_at=start,
            )
            db.add(root)
            db.flush()
            db.add(
                CAGeneration(
                    id=1,
                    root_id=root.id,
                    subject=self.issuing.subject.rfc4514_string(),
                    cert_pem=_pem(self.issuing),
                    key_pem_encrypted="unused",
                    key_type="ec-p256",
                    status=GenerationStatus.ACTIVE,
                    not_before=self.issuing.not_valid_before_utc,
                    not_after=self.issuing.not_valid_after_utc,
                    created_at=start,
                    rotated_at=None,
                    retired_at=None,
                    crl_number=0,
                )
            )
        # The server's own certificate comes from a separate CA, as in production.
        server_ca_key, server_ca = _ca("test server CA", None, start)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("localhost"))
            .issuer_name(server_ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
            .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(server_ca_key, hashes.SHA256())
        )
        self.server_ca = self.folder / "server-ca.pem"
        self.server_ca.write_text(_pem(server_ca))
        self.server_cert = self.folder / "server.pem"
        self.server_cert.write_text(_pem(cert))
        self.server_key = self.folder / "server-key.pem"
        self.server_key.write_bytes(_key_pem(key))
        self.server_key.chmod(0o600)

    def make_user(
        self,
        *,
        email: str,
        broker: str,
        name: str = "Erika Muster",
        status: UserStatus = UserStatus.ACTIVE,
    ) -> int:
        with transaction(session_factory(self.engine)) as db:
            org = db.scalars(
                select(Organisation).where(Organisation.broker_number == broker)
            ).first()
            if org is None:
                org = Organisation(broker_number=broker, name="Agentur", created_at=EPOCH)
                db.add(org)
                db.flush()
            user = User(
                organisation_id=org.id,
                email=email.lower(),
                name=name,
                locale="de",
                status=status,
                created_at=EPOCH,
            )
            db.add(user)
            db.flush()
            return user.id

    def issue(
        self,
        user_id: int,
        *,
        not_before: dt.datetime = EPOCH - dt.timedelta(days=1),
        not_after: dt.datetime = EPOCH + dt.timedelta(days=730),
        email: str | None = None,
        eku: bool = True,
        signer: tuple[Any, x509.Certificate] | None = None,
        store: bool = True,
    ) -> ClientCert:
        """A broker certificate (RSA-2048, EKU clientAuth, SAN e-mail), stored unless told not."""
        with session_factory(self.engine)() as db:
            user = db.get(User, user_id)
            assert user is not None
            user_email = user.email
            broker = user.organisation.broker_number
            name = user.name
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        issuer_key, issuer = signer or (self.issuing_key, self.issuing)
        assert issuer is not None
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                        x509.NameAttribute(NameOID.SERIAL_NUMBER, broker),
                    ]
                )
            )
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.RFC822Name(email or user_email),
                        x509.UniformResourceIdentifier(f"urn:brokergate:user:{user_id}"),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
        )
        if eku:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = builder.sign(issuer_key, hashes.SHA256())
        der = cert.public_bytes(serialization.Encoding.DER)
        fingerprint = hashlib.sha256(der).hexdigest()
        serial = format(cert.serial_number, "x")
        if store:
            with transaction(session_factory(self.engine)) as db:
                db.add(
                    Certificate(
                        serial=serial,
                        fingerprint_sha256=fingerprint,
                        subject=cert.subject.rfc4514_string(),
                        not_before=not_before,
                        not_after=not_after,
                        status=CertificateStatus.VALID,
                        generation_id=1,
                        user_id=user_id,
                        key_type="rsa2048",
                        p12_profile="modern",
                        issued_at=not_before,
                        issued_by="test",
                        cert_pem=_pem(cert),
                    )
                )
        self._count += 1
        cert_path = self.folder / f"client-{self._count}.pem"
        key_path = self.folder / f"client-{self._count}-key.pem"
        cert_path.write_text(_pem(cert))
        key_path.write_bytes(_key_pem(key))
        key_path.chmod(0o600)
        return ClientCert(
            cert_path=cert_path,
            key_path=key_path,
            serial=serial,
            fingerprint=fingerprint,
            user_id=user_id,
            certificate=cert,
        )

    def revoke(self, serial: str, at: dt.datetime) -> None:
        from store import RevocationReason

        with transaction(session_factory(self.engine)) as db:
            row = db.scalars(select(Certificate).where(Certificate.serial == serial)).one()
            row.status = CertificateStatus.REVOKED
            row.revoked_at = at
            row.revocation_reason = RevocationReason.KEY_COMPROMISE


@pytest.fixture
def pki(engine: Engine, tmp_path: Path) -> PKI:
    result = PKI(engine=engine, folder=tmp_path)
    result.setup()
    return result


@pytest.fixture
def foreign_pki(tmp_path: Path) -> tuple[Any, x509.Certificate]:
    """Another insurer's issuing CA (not in our store)."""
    return _ca("Foreign Insurer Client CA", None, EPOCH - dt.timedelta(days=30))


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


def make_forwarder(upstream_url: str) -> Callable[..., Any]:
    """A minimal forwarder for tests (the real one is gw-proxy's ``proxy_request``).

    Buffers bodies; strips client identity headers and hop-by-hop headers like the proxy.
    """

    async def forward(
        request: web.Request, *, identity_headers: Mapping[str, str]
    ) -> web.StreamResponse:
        headers = {
            k: v
            for k, v in request.headers.items()
            if not is_identity_header(k)
            and k.lower() not in {"host", "connection", "transfer-encoding", "content-length"}
        }
        headers.update(identity_headers)
        async with (
            aiohttp.ClientSession() as client,
            client.request(
                request.method,
                upstream_url + request.raw_path,
                headers=headers,
                data=await request.read(),
            ) as response,
        ):
            return web.Response(
                body=await response.read(),
                status=response.status,
                content_type=response.content_type,
            )

    return forward


@dataclass(kw_only=True)
class RunningGateway:
    url: str
    app: web.Application
    runner: web.AppRunner
    tls: ssl.SSLContext


@pytest.fixture
async def start_gateway(
    pki: PKI, db_url: str, upstream: str, clock: Any
) -> AsyncIterator[Callable[..., Any]]:
    """``await start_gateway(**settings)`` → RunningGateway on 127.0.0.1 with real TLS."""
    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> RunningGateway:
        overrides.setdefault("revocation_refresh_interval", dt.timedelta(seconds=0.2))
        settings = GatewaySettings(upstream_url=upstream, **overrides)
        assert pki.issuing is not None
        tls = create_server_context(
            cert_chain=pki.server_cert, private_key=pki.server_key, client_ca_issuers=[pki.issuing]
        )
        app = create_app(
            settings=settings,
            store_url=db_url,
            secret_key=SECRET,
            forward=make_forwarder(upstream),
            clock=clock,
            tls_context=tls,
            trust_loader=trust_loader,
        )
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
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
