"""Downloads through the signer (issue 12): the gateway has no CA passphrase and a keyless
authority; a real ``brokergate ca serve`` in its own process issues; signer down → a clear
503 "try again later", nothing half-issued, everything else keeps working."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ca import SignerClient
from store import AuditEvent, Certificate, CertificateStatus, MailOutbox, transaction
from tests.conftest import REPO, TEST_PASSPHRASE, TEST_SECRET_KEY, FakeClock, password_mail_for
from tests.logins.web.test_account_pages import download, logged_in
from tests.polling import wait_for


@pytest.fixture
def socket_path() -> Iterator[Path]:
    # AF_UNIX paths are short (108 bytes): pytest's tmp_path can be longer.
    folder = Path("/tmp") / f"bg-signer-{secrets.token_hex(4)}"
    folder.mkdir(mode=0o700)
    yield folder / "signer.sock"
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


def start_signer(db_url: str, socket_path: Path, log: Path) -> subprocess.Popen[bytes]:
    """``brokergate ca serve`` in a process of its own: the only one with the passphrase."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKERGATE_")}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "BROKERGATE_STORE__URL": db_url,
            "BROKERGATE_STORE__SECRET_KEY": TEST_SECRET_KEY.decode(),
            "BROKERGATE_CA__PASSPHRASE": TEST_PASSPHRASE,
            "BROKERGATE_SIGNER__SOCKET_PATH": str(socket_path),
        }
    )
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "brokergate", "ca", "serve"],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    wait_for(
        lambda: b"listening on" in log.read_bytes() or proc.poll() is not None,
        timeout=30,
        message="the signer did not start",
    )
    assert proc.poll() is None, log.read_text()
    return proc


def stop_signer(proc: subprocess.Popen[bytes], log: Path, socket_path: Path) -> None:
    """SIGTERM: the signer finishes, exits 0 and removes its socket."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()
    assert b"stopped" in log.read_bytes()
    assert not socket_path.exists()


def counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with transaction(sessions) as db:
        certs = db.scalar(select(func.count()).select_from(Certificate)) or 0
        mails = db.scalar(select(func.count()).select_from(MailOutbox)) or 0
    return certs, mails


async def test_the_gateway_downloads_through_the_signer_without_any_key_access(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    db_url: str,
    socket_path: Path,
    tmp_path: Path,
) -> None:
    # The signer runs on the real clock: the gateway's must agree about session freshness.
    clock.now = datetime.now(UTC)
    signer = start_signer(db_url, socket_path, tmp_path / "signer.log")
    client = SignerClient(socket_path=socket_path, timeout=30, retry_delays=(0.0, 0.05))
    try:
        gw = await gateway(signer=client)
        b = browser_for(gw)
        uid = await logged_in(b, make_user, sessions)
        status, data, response = await download(b)
        assert status == 200, data
        assert response.headers["Content-Type"] == "application/x-pkcs12"
        with transaction(sessions) as db:
            cert = db.scalars(select(Certificate).where(Certificate.user_id == uid)).one()
            via = db.scalars(
                select(AuditEvent.details).where(AuditEvent.action == "cert.download")
            ).one()
        assert via["via"] == "signer" and cert.issued_by == f"user:{uid}"
        key, leaf, _ = pkcs12.load_key_and_certificates(
            data, password_mail_for(sessions, cert.serial).encode()
        )
        assert key is not None and leaf is not None

        # Revocation from the account page works with the keyless authority (no key here).
        await b.get("/_gateway/account")
        status, _body, _ = await b.post(
            "/_gateway/account/certificate/revoke", {"certificate": str(cert.id)}
        )
        assert status == 200
        with transaction(sessions) as db:
            revoked = db.get_one(Certificate, cert.id)
            assert revoked.status == CertificateStatus.REVOKED

        # SIGTERM: the signer stops cleanly and removes its socket.
        stop_signer(signer, tmp_path / "signer.log", socket_path)

        # Signer down: a clear 503 "try again later" page, nothing issued, the rest works.
        before = counts(sessions)
        await b.get("/_gateway/account")
        status, body, _ = await b.post("/_gateway/account/certificate/download", {})
        assert status == 503
        assert "Bitte versuchen Sie es in einigen Minuten erneut" in body
        assert counts(sessions) == before
        status, body = await b.get("/_gateway/account")
        assert status == 200 and "Mein Konto" in body
        status, _ = await b.get("/antrag")  # the portal, through the gateway
        assert status == 200
    finally:
        if signer.poll() is None:
            signer.kill()
            signer.wait(timeout=10)
        await client.close()
