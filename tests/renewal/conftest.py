"""Fixtures of the renewal tests: a real SMTP server (aiosmtpd) on loopback, certificates
rows, and the delivery service wired to both."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy.orm import Session, sessionmaker

from ca import create_user
from renewal import MailRenderer, MailSettings, OutboxDelivery
from renewal._outbox import WorkerId
from store import (
    OUTBOX_PURPOSE,
    CAGeneration,
    CARoot,
    Certificate,
    CertificateStatus,
    GenerationStatus,
    RootStatus,
    Sealer,
    UserStatus,
    transaction,
)
from tests.conftest import TEST_SECRET_KEY, FakeClock, free_port

PUBLIC_URL = "https://portal.example.test"
DUMMY_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@dataclass
class SmtpSink:
    """An aiosmtpd handler that records what it accepted; can refuse or be slow."""

    messages: list[EmailMessage] = field(default_factory=list)
    reject: str | None = None  # e.g. "550 5.1.1 mailbox unavailable" for DATA
    rcpt_delay: float = 0.0  # seconds the RCPT command takes (a slow server)
    rcpt_started: threading.Event = field(default_factory=threading.Event)
    delivered: threading.Event = field(default_factory=threading.Event)  # one message accepted
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        self.rcpt_started.set()
        if self.rcpt_delay:
            await asyncio.sleep(self.rcpt_delay)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reject:
            return self.reject
        msg = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.messages.append(msg)
        self.delivered.set()
        return "250 Message accepted for delivery"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(m["Message-ID"]) for m in self.messages]


@dataclass
class SmtpServer:
    """A real SMTP server on 127.0.0.1 that tests can start and stop (server down / up)."""

    port: int
    sink: SmtpSink
    controller: Controller | None = None

    def start(self) -> None:
        if self.controller is None:
            self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)
            self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer(port=free_port(), sink=SmtpSink())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def mail_settings(port: int, **overrides: Any) -> MailSettings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "from_addr": "Maklerbetreuung <no-reply@portal.example.test>",
        "reply_to": "support@portal.example.test",
        "timeout": timedelta(seconds=5),
        "batch_size": 5,
    }
    values.update(overrides)
    return MailSettings(**values)


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(secret=TEST_SECRET_KEY, purpose=OUTBOX_PURPOSE)


@pytest.fixture
def renderer() -> MailRenderer:
    return MailRenderer(public_url=PUBLIC_URL)


DeliveryFactory = Callable[..., OutboxDelivery]


@pytest.fixture
def make_delivery(
    sessions: sessionmaker[Session],
    smtp_server: SmtpServer,
    renderer: MailRenderer,
    sealer: Sealer,
    clock: FakeClock,
) -> DeliveryFactory:
    def make(**overrides: Any) -> OutboxDelivery:
        settings = overrides.pop("settings", None) or mail_settings(smtp_server.port)
        return OutboxDelivery(
            sessions=sessions,
            settings=settings,
            renderer=renderer,
            sealer=sealer,
            clock=clock,
            worker=overrides.pop("worker", None) or WorkerId.for_this_process(),
            jitter=lambda: 0.0,
            **overrides,
        )

    return make


@dataclass
class CertFactory:
    """Inserts users and certificate rows directly (the CA's crypto is not needed here)."""

    sessions: sessionmaker[Session]
    clock: FakeClock
    counter: int = 0
    generation_id: int | None = None

    def _generation(self, session: Session) -> int:
        if self.generation_id is None:
            now = self.clock()
            root = CARoot(
                subject="CN=Test Root",
                cert_pem=DUMMY_PEM,
                key_pem_encrypted="x",
                status=RootStatus.ACTIVE,
                not_before=now,
                not_after=now + timedelta(days=7300),
                created_at=now,
            )
            session.add(root)
            session.flush()
            gen = CAGeneration(
                id=1,
                root_id=root.id,
                subject="CN=Test Broker CA G1",
                cert_pem=DUMMY_PEM,
                key_pem_encrypted="x",
                key_type="rsa2048",
                status=GenerationStatus.ACTIVE,
                not_before=now,
                not_after=now + timedelta(days=2190),
                created_at=now,
            )
            session.add(gen)
            session.flush()
            self.generation_id = gen.id
        return self.generation_id

    def user(
        self,
        *,
        locale: str = "de",
        name: str = "Erika Mustermann",
        status: UserStatus = UserStatus.ACTIVE,
    ) -> int:
        self.counter += 1
        n = self.counter
        with transaction(self.sessions) as session:
            user = create_user(
                session,
                broker_number=f"60/{100 + n:03d}/{4500 + n:04d}",
                email=f"broker{n}@example.org",
                name=name,
                locale=locale,
                status=status,
                now=self.clock(),
                actor="test:setup",
            )
            return user.id

    def cert(
        self,
        user_id: int,
        *,
        not_after: datetime,
        status: CertificateStatus = CertificateStatus.VALID,
        first_used_at: datetime | None = None,
    ) -> int:
        self.counter += 1
        n = self.counter
        with transaction(self.sessions) as session:
            gen = self._generation(session)
            cert = Certificate(
                serial=f"{n:032x}",
                fingerprint_sha256=f"{n:064x}",
                subject=f"CN=user {user_id}",
                not_before=not_after - timedelta(days=730),
                not_after=not_after,
                status=status,
                revoked_at=self.clock() if status is CertificateStatus.REVOKED else None,
                generation_id=gen,
                user_id=user_id,
                key_type="rsa2048",
                p12_profile="compat",
                issued_at=not_after - timedelta(days=730),
                issued_by="test",
                first_used_at=first_used_at,
                cert_pem=DUMMY_PEM,
            )
            session.add(cert)
            session.flush()
            return cert.id


@pytest.fixture
def certs(sessions: sessionmaker[Session], clock: FakeClock) -> CertFactory:
    return CertFactory(sessions=sessions, clock=clock)
