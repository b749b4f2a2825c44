"""The dev mail sink: a real SMTP conversation (aiosmtplib) in, a 0600 .eml file and a
short summary out."""

from __future__ import annotations

import io
import stat
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from brokergate._dev import MailSink, ReceivedMail, read_mail, start_mail_sink, text_body
from tests.conftest import FakeClock
from tests.devrun.conftest import free_port


def password_mail() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "brokergate <no-reply@localhost>"
    msg["To"] = "demo.broker@example.org"
    msg["Subject"] = "Passwort für Ihr Zertifikat"
    msg.set_content("Guten Tag,\n\n    Passwort: abcd-efgh-jkmn-pqrs-tuvw\n\nSeriennummer: 0a1b\n")
    msg.add_alternative("<p>Passwort: <b>abcd-efgh-jkmn-pqrs-tuvw</b></p>", subtype="html")
    return msg


async def test_a_mail_is_kept_printed_and_reported(tmp_path: Path, clock: FakeClock) -> None:
    out = io.StringIO()
    received: list[ReceivedMail] = []
    sink = MailSink(folder=tmp_path / "mail", out=out, clock=clock, on_mail=received.append)
    port = free_port()
    server = await start_mail_sink(sink, host="127.0.0.1", port=port)
    try:
        await aiosmtplib.send(password_mail(), hostname="127.0.0.1", port=port, timeout=10)
        await aiosmtplib.send(password_mail(), hostname="127.0.0.1", port=port, timeout=10)
    finally:
        server.close()
        await server.wait_closed()
    assert len(received) == 2
    first = received[0]
    assert first.to == "demo.broker@example.org"
    assert first.subject == "Passwort für Ihr Zertifikat"
    assert "Passwort: abcd-efgh-jkmn-pqrs-tuvw" in first.text
    files = sorted((tmp_path / "mail").glob("*.eml"))
    assert files == sorted(m.path for m in received)  # two files, never overwritten
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "mail").stat().st_mode) == 0o700
    stored = read_mail(first.path)
    assert stored["Subject"] == "Passwort für Ihr Zertifikat"
    assert "abcd-efgh-jkmn-pqrs-tuvw" in text_body(stored)
    printed = out.getvalue()
    assert "[mail] to demo.broker@example.org: Passwort für Ihr Zertifikat" in printed
    assert str(first.path) in printed
    assert "<b>" not in printed  # the text part is shown, not the HTML


async def test_a_mail_without_text_part_is_kept_with_its_subject(
    tmp_path: Path, clock: FakeClock
) -> None:
    out = io.StringIO()
    sink = MailSink(folder=tmp_path / "mail", out=out, clock=clock)
    port = free_port()
    server = await start_mail_sink(sink, host="127.0.0.1", port=port)
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg["Subject"] = "only HTML"
    msg.set_content("<p>hi</p>", subtype="html")
    try:
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, timeout=10)
    finally:
        server.close()
        await server.wait_closed()
    (path,) = (tmp_path / "mail").glob("*.eml")
    assert text_body(read_mail(path)) == ""
    assert "[mail] to b@example.org: only HTML" in out.getvalue()


async def test_a_busy_port_is_an_error_not_a_hang(tmp_path: Path, clock: FakeClock) -> None:
    sink = MailSink(folder=tmp_path / "mail", out=io.StringIO(), clock=clock)
    port = free_port()
    server = await start_mail_sink(sink, host="127.0.0.1", port=port)
    try:
        with pytest.raises(OSError):
            await start_mail_sink(sink, host="127.0.0.1", port=port)
    finally:
        server.close()
        await server.wait_closed()
