"""Delivering the outbox over SMTP (aiosmtplib): claim, render, send, record.

One :class:`OutboxDelivery` per process; :meth:`OutboxDelivery.deliver_due` is the
scheduler's job and is called directly by tests. Database work runs in threads
(``asyncio.to_thread``), each step in its own short transaction, so the event loop
never blocks on the database and no transaction stays open during SMTP.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import aiosmtplib
from sqlalchemy.orm import Session, sessionmaker

from renewal import _outbox as ob
from renewal._errors import TemplateError
from renewal._message import build_message, classify_smtp_error, message_id_for
from renewal._render import MailRenderer
from renewal._settings import MailSettings
from store import Clock, MailOutbox, MailStatus, Sealer, SealError, open_mail_secrets

log = logging.getLogger("renewal.delivery")

MAX_BATCHES_PER_RUN = 500  # a bounded loop: one run drains at most this many batches


@dataclass(kw_only=True)
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    lost_claims: int = 0

    def __str__(self) -> str:
        return f"sent {self.sent}, to retry {self.retried}, failed {self.failed}" + (
            f", claims lost {self.lost_claims}" if self.lost_claims else ""
        )


class _ConnectFailed(Exception):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(kw_only=True)
class OutboxDelivery:
    """Sends due outbox rows. Owns no resources between runs (one SMTP connection per run).

    Args:
        sessions: the store's session factory (the caller owns the engine).
        settings: SMTP and retry settings.
        renderer: turns rows into subject, text and HTML.
        sealer: opens the rows' sealed secrets (purpose ``store.OUTBOX_PURPOSE``).
        clock: the injected clock.
        worker: this worker's identity on its claims.
        jitter: source of retry jitter in [0, 1).
    """

    sessions: sessionmaker[Session]
    settings: MailSettings
    renderer: MailRenderer
    sealer: Sealer
    clock: Clock
    worker: ob.WorkerId = field(default_factory=ob.WorkerId.for_this_process)
    jitter: Callable[[], float] = ob.jitter
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    # The SMTP connection of the current run (opened lazily, closed when the run ends).
    _smtp: aiosmtplib.SMTP | None = field(default=None, init=False, repr=False)

    def request_stop(self) -> None:
        """Finish the mail in flight, release the rest of the batch, take no new batch."""
        self._stop.set()

    def _retry_after(self, attempts: int) -> timedelta:
        return ob.retry_delay(
            attempts,
            base=self.settings.retry_base,
            cap=self.settings.retry_cap,
            jitter=self.jitter(),
        )

    async def release_abandoned(self) -> int:
        """Release claims of dead processes on this host (call once at start)."""
        released = await asyncio.to_thread(
            ob.release_abandoned_claims, self.sessions, worker=self.worker, now=self.clock()
        )
        if released:
            log.warning("released %d mail claim(s) left by a dead process on this host", released)
        return released

    async def deliver_due(self) -> DeliveryReport:
        """Send every mail that is due now, batch by batch, until none is left."""
        report = DeliveryReport()
        try:
            for _ in range(MAX_BATCHES_PER_RUN):
                if self._stop.is_set():
                    break
                batch = await asyncio.to_thread(
                    ob.claim_batch,
                    self.sessions,
                    worker=self.worker,
                    now=self.clock(),
                    lease=self.settings.claim_lease,
                    limit=self.settings.batch_size,
                )
                if not batch:
                    break
                await self._deliver_batch(batch, report)
        finally:
            await self._disconnect()
        if report.sent or report.retried or report.failed:
            log.info("outbox run: %s", report)
        return report

    async def _deliver_batch(self, batch: list[ob.ClaimedMail], report: DeliveryReport) -> None:
        # Never-attempted mails only: a mail whose send has begun keeps its claim whatever
        # happens next, because it may have been accepted; releasing it could send it twice.
        pending = [m.id for m in batch]
        try:
            for mail in batch:
                if self._stop.is_set():
                    break  # shutdown: the rest is released below, untouched
                pending.remove(mail.id)
                try:
                    await self._deliver_one(mail, report)
                except _ConnectFailed as exc:
                    # The server is unreachable: this and every remaining mail wait (backoff).
                    not_sent, pending = [mail.id, *pending], []
                    for mail_id in not_sent:
                        await self._record_failure(
                            mail_id, exc.reason, permanent=False, report=report
                        )
                    return
        finally:
            # Stopped or cancelled in the middle: hand back what was never attempted.
            if pending:
                await asyncio.shield(
                    asyncio.to_thread(
                        ob.release_claims, self.sessions, mail_ids=pending, worker=self.worker
                    )
                )

    async def _deliver_one(self, mail: ob.ClaimedMail, report: DeliveryReport) -> None:
        # Renew right before the send: the lease (>= 3 SMTP timeouts) cannot lapse mid-send,
        # and a row another worker took over after our lease lapsed is not sent twice.
        if not await asyncio.to_thread(
            ob.renew_claim,
            self.sessions,
            mail_id=mail.id,
            worker=self.worker,
            now=self.clock(),
            lease=self.settings.claim_lease,
        ):
            report.lost_claims += 1
            log.warning("mail %d: claim lost before sending; left to its new holder", mail.id)
            return
        message_id = message_id_for(mail.id, mail.created_at, self.settings.from_addr)
        try:
            secrets = open_mail_secrets(MailOutbox(secret_sealed=mail.secret_sealed), self.sealer)
            rendered = self.renderer.render(
                template=mail.template, locale=mail.locale, context=mail.context, secrets=secrets
            )
            message = build_message(
                rendered,
                to_addr=mail.to_addr,
                from_addr=self.settings.from_addr,
                reply_to=self.settings.reply_to,
                message_id=message_id,
                now=self.clock(),
            )
            del secrets, rendered
        except (TemplateError, SealError, ValueError) as exc:
            await self._record_failure(mail.id, str(exc), permanent=True, report=report)
            return
        if self._smtp is None:
            self._smtp = await self._connect()
        smtp = self._smtp
        try:
            await smtp.send_message(message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            permanent, text = classify_smtp_error(exc)
            await self._record_failure(mail.id, text, permanent=permanent, report=report)
            if isinstance(exc, aiosmtplib.SMTPServerDisconnected | OSError):
                await self._disconnect()  # the next mail reconnects
            return
        # The window between the server's "250 OK" above and this commit is the only place a
        # crash can cause a second delivery (docs/mail.md); the Message-ID makes it detectable.
        if await asyncio.shield(
            asyncio.to_thread(
                ob.mark_sent,
                self.sessions,
                mail_id=mail.id,
                worker=self.worker,
                now=self.clock(),
                message_id=message_id,
            )
        ):
            report.sent += 1
            log.info("mail %d (%s) sent as %s", mail.id, mail.template, message_id)
        else:
            report.lost_claims += 1
            log.error("mail %d was sent but its claim was lost: possible duplicate", mail.id)

    async def _record_failure(
        self, mail_id: int, error: str, *, permanent: bool, report: DeliveryReport
    ) -> None:
        status = await asyncio.shield(
            asyncio.to_thread(
                ob.mark_attempt_failed,
                self.sessions,
                mail_id=mail_id,
                worker=self.worker,
                now=self.clock(),
                error=error,
                permanent=permanent,
                retry_after=self._retry_after,
                max_attempts=self.settings.max_attempts,
            )
        )
        if status is MailStatus.FAILED:
            report.failed += 1
            log.error("mail %d failed permanently: %s", mail_id, error)
        elif status is MailStatus.PENDING:
            report.retried += 1
            log.warning("mail %d not delivered, will retry: %s", mail_id, error)
        else:
            report.lost_claims += 1

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        tls_context = None
        if s.tls != "none":
            # SECURITY: certificate and host name are verified (system store or tls_ca_file).
            tls_context = ssl.create_default_context(cafile=s.tls_ca_file)
        smtp = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            timeout=s.timeout.total_seconds(),
            use_tls=s.tls == "implicit",
            start_tls=True if s.tls == "starttls" else False,
            tls_context=tls_context,
            username=s.username or None,
            password=(s.password or None) if s.username else None,
        )
        try:
            await smtp.connect()
        except (aiosmtplib.SMTPException, OSError) as exc:
            _, text = classify_smtp_error(exc)
            log.warning("cannot connect to SMTP %s:%d: %s", s.smtp_host, s.smtp_port, text)
            raise _ConnectFailed(text) from None
        return smtp

    async def _disconnect(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            if smtp.is_connected:
                await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            smtp.close()
