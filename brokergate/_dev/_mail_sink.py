"""The local SMTP sink of ``dev run``: every mail is printed briefly and kept as a .eml file.

aiosmtpd's protocol runs on the caller's event loop (no Controller thread), so the sink
starts and stops with the supervisor and needs no second thread.
"""

from __future__ import annotations

import asyncio
import email.policy
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, TextIO

from aiosmtpd.smtp import SMTP, Envelope

from store import Clock

PREVIEW_LINES = 12  # enough for a TAN or a certificate password and its context


@dataclass(frozen=True, kw_only=True)
class ReceivedMail:
    path: Path
    to: str
    subject: str
    text: str  # the text/plain body ("" when the mail has none)


def text_body(message: EmailMessage) -> str:
    """The text/plain part of ``message`` (or "")."""
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return ""
    content = part.get_content()
    return str(content)


def read_mail(path: Path) -> EmailMessage:
    """Parse a .eml file written by the sink."""
    with path.open("rb") as fh:
        message = BytesParser(policy=email.policy.default).parse(fh)
    assert isinstance(message, EmailMessage)
    return message


class MailSink:
    """aiosmtpd handler: store each message under ``folder`` and report it.

    Args:
        folder: where the .eml files go (created 0700; each file 0600, since mails carry
            certificate passwords and TANs).
        out: where the short summary is printed.
        clock: names the files in arrival order.
        on_mail: called with each stored mail (the supervisor uses it to find the demo
            broker's password mail).
    """

    def __init__(
        self,
        *,
        folder: Path,
        out: TextIO,
        clock: Clock,
        on_mail: Callable[[ReceivedMail], None] | None = None,
    ) -> None:
        self._folder = folder
        self._out = out
        self._clock = clock
        self._on_mail = on_mail
        self._seq = itertools.count(1)

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        assert isinstance(raw, bytes)
        message = BytesParser(policy=email.policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        path = self._store(raw, self._clock())
        mail = ReceivedMail(
            path=path,
            to=", ".join(envelope.rcpt_tos),
            subject=str(message.get("Subject", "")),
            text=text_body(message),
        )
        self._print(mail)
        if self._on_mail is not None:
            self._on_mail(mail)
        return "250 OK: kept in the dev mail folder"

    def _store(self, raw: bytes, now: datetime) -> Path:
        self._folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{now:%Y%m%dT%H%M%S}-{os.getpid()}-{next(self._seq):04d}.eml"
        path = self._folder / name
        # SECURITY: mails hold passwords and TANs: 0600 from creation on.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        return path

    def _print(self, mail: ReceivedMail) -> None:
        lines = [line for line in mail.text.splitlines() if line.strip()][:PREVIEW_LINES]
        print(f"[mail] to {mail.to}: {mail.subject}", file=self._out)
        for line in lines:
            print(f"[mail]   {line}", file=self._out)
        print(f"[mail]   (kept as {mail.path})", file=self._out, flush=True)


async def start_mail_sink(sink: MailSink, *, host: str, port: int) -> asyncio.Server:
    """Listen on ``host:port``; the caller closes the returned server."""
    loop = asyncio.get_running_loop()
    # hostname given: aiosmtpd would otherwise ask the resolver for this machine's FQDN.
    return await loop.create_server(
        lambda: SMTP(sink, hostname="localhost", loop=loop), host=host, port=port
    )
