"""STARTTLS, implicit TLS and SMTP AUTH against a real aiosmtpd server on loopback."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy.orm import Session, sessionmaker

from renewal import MailRenderer, OutboxDelivery
from store import MailOutbox, MailStatus, Sealer, queue_mail, transaction
from tests.conftest import FakeClock
from tests.pki import TestCA
from tests.renewal.conftest import SmtpSink, free_port, mail_settings

SMTP_PASSWORD = "smtp-secret-Hx81"


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A test server CA (the client trusts exactly it) and a 127.0.0.1 certificate below it.

    Returns (CA file, certificate file, key file).
    """
    folder = tmp_path_factory.mktemp("smtp-tls")
    now = datetime.now(UTC)
    server_ca = TestCA.root("test smtp CA", now=now)
    files = server_ca.server(now=now, dns_names=(), addresses=("127.0.0.1",)).write(folder, "smtp")
    return server_ca.write_cert(folder / "ca.pem"), files.cert, files.key


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture(params=["starttls", "implicit"])
def tls_server(
    request: pytest.FixtureRequest, server_cert: tuple[Path, Path, Path]
) -> Iterator[tuple[str, int, SmtpSink]]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*server_cert[1:])
    sink, port = SmtpSink(), free_port()
    kwargs: dict[str, Any] = {"authenticator": _authenticator}
    if request.param == "starttls":
        kwargs.update(tls_context=context, require_starttls=True, auth_require_tls=True)
        controller = Controller(sink, hostname="127.0.0.1", port=port, server_kwargs=kwargs)
    else:
        # aiosmtpd does not count an implicit-TLS session as TLS for auth_require_tls; the
        # whole connection is TLS anyway.
        kwargs.update(auth_require_tls=False)
        controller = Controller(
            sink, hostname="127.0.0.1", port=port, ssl_context=context, server_kwargs=kwargs
        )
    controller.start()
    try:
        yield request.param, port, sink
    finally:
        controller.stop()


def _queue(sessions: sessionmaker[Session], clock: FakeClock, sealer: Sealer) -> int:
    with transaction(sessions) as session:
        return queue_mail(
            session,
            kind="email_tan",
            to_addr="erika@example.org",
            locale="de",
            template="email_tan",
            context={},
            secrets={"tan": "K7PQ2M"},
            sealer=sealer,
            now=clock(),
        ).id


@pytest.mark.parametrize("password", [SMTP_PASSWORD, "wrong"])
async def test_tls_and_auth(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    renderer: MailRenderer,
    server_cert: tuple[Path, Path, Path],
    tls_server: tuple[str, int, SmtpSink],
    password: str,
) -> None:
    mode, port, sink = tls_server
    mail_id = _queue(sessions, clock, sealer)
    settings = mail_settings(
        port, tls=mode, tls_ca_file=str(server_cert[0]), username="mailer", password=password
    )
    delivery = OutboxDelivery(
        sessions=sessions,
        settings=settings,
        renderer=renderer,
        sealer=sealer,
        clock=clock,
        jitter=lambda: 0.0,
    )
    report = await delivery.deliver_due()
    with transaction(sessions) as session:
        row = session.get(MailOutbox, mail_id)
        assert row is not None
    if password == SMTP_PASSWORD:
        assert report.sent == 1 and row.status is MailStatus.SENT
        [msg] = sink.messages
        assert "K7PQ2M" in str(msg.get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]
    else:
        # Wrong credentials are an operator problem: the mail waits, it is not failed.
        assert report.retried == 1 and row.status is MailStatus.PENDING
        assert "535" in (row.last_error or "") and SMTP_PASSWORD not in (row.last_error or "")
        assert sink.messages == []


async def test_untrusted_server_certificate_is_refused(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    renderer: MailRenderer,
    tls_server: tuple[str, int, SmtpSink],
) -> None:
    mode, port, sink = tls_server
    mail_id = _queue(sessions, clock, sealer)
    # The system store does not know the self-signed test certificate.
    settings = mail_settings(port, tls=mode, username="mailer", password=SMTP_PASSWORD)
    delivery = OutboxDelivery(
        sessions=sessions,
        settings=settings,
        renderer=renderer,
        sealer=sealer,
        clock=clock,
        jitter=lambda: 0.0,
    )
    assert (await delivery.deliver_due()).retried == 1
    with transaction(sessions) as session:
        row = session.get(MailOutbox, mail_id)
        assert row is not None and row.status is MailStatus.PENDING
        assert "CERTIFICATE_VERIFY_FAILED" in (row.last_error or "")
    assert sink.messages == []
