"""Building the MIME message of one outbox row: headers, text part, HTML part."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import aiosmtplib

from renewal._render import RenderedMail

FALLBACK_DOMAIN = "brokergate.invalid"  # RFC 2606: never a real domain


def message_id_for(mail_id: int, created_at: datetime, from_addr: str) -> str:
    """A Message-ID that is the same for every attempt of one outbox row.

    If a crash between the server's acceptance and our commit makes a second attempt
    deliver the mail again, the copy carries the same Message-ID, so mail clients and
    archives that de-duplicate by it show one mail (docs/mail.md, "the residual window").
    The creation time keeps ids unique across databases that reuse row ids.
    """
    domain = parseaddr(from_addr)[1].rpartition("@")[2] or FALLBACK_DOMAIN
    return f"<brokergate.outbox.{mail_id}.{int(created_at.timestamp())}@{domain}>"


def build_message(
    rendered: RenderedMail,
    *,
    to_addr: str,
    from_addr: str,
    reply_to: str | None,
    message_id: str,
    now: datetime,
) -> EmailMessage:
    """A multipart/alternative mail (text first, HTML preferred by clients that can show it).

    Raises:
        ValueError: a header value contains a line break (the email package refuses it).
    """
    msg = EmailMessage()
    msg["From"] = from_addr
    msg["To"] = to_addr
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    # RFC 3834: a machine wrote this; auto-responders (out-of-office) must not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    # Exchange ignores Auto-Submitted for out-of-office replies; this header it honours.
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    # After the body: making the message multipart moves Content-* headers into the parts.
    msg["Content-Language"] = rendered.locale
    return msg


def classify_smtp_error(exc: BaseException) -> tuple[bool, str]:
    """(permanent?, text for last_error) for an exception raised while sending.

    RFC 5321 §4.2.1: 5yz replies are permanent, 4yz transient. Connection problems and
    timeouts are transient. The text never contains the message body.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        return all(code >= 500 for code in codes), f"recipient refused: {text}"
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return exc.code >= 500, f"SMTP {exc.code} {exc.message}"
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return False, f"SMTP server disconnected: {exc}"
    if isinstance(exc, TimeoutError):
        return False, f"SMTP timeout: {exc}"
    if isinstance(exc, OSError):
        return False, f"SMTP server unreachable: {exc}"
    return False, f"{type(exc).__name__}: {exc}"
