"""The ``renewal run`` process: the jobs and the APScheduler (3.x, asyncio) that runs them.

Every job is a plain method of :class:`RenewalJobs` that tests call directly with an
injected clock; the scheduler only decides *when*. Synchronous jobs (database work)
run in a thread (``asyncio.to_thread``) inside a coroutine of ours, so a stop can await
every run in flight; the delivery job is a coroutine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.orm import Session, sessionmaker

from renewal._cleanup import delete_expired
from renewal._delivery import DeliveryReport, OutboxDelivery
from renewal._reminders import ReminderReport, queue_due_reminders
from renewal._settings import RenewalSettings
from store import Clock

log = logging.getLogger("renewal")

SHUTDOWN_TIMEOUT = timedelta(seconds=60)  # > one SMTP timeout: the mail in flight finishes


@dataclass(kw_only=True)
class RenewalJobs:
    """The periodic work of the renewal process.

    Args:
        publish_due_crls: ``CertificateAuthority.publish_due_crls`` (returns the generations
            whose CRL was regenerated); None when the CA is not set up here.
        supersede_replaced: ``CertificateAuthority.supersede_replaced`` (revokes old
            certificates whose renewal was used or whose grace period ended); None without
            the CA.
    """

    sessions: sessionmaker[Session]
    settings: RenewalSettings
    delivery: OutboxDelivery
    clock: Clock
    publish_due_crls: Callable[[], list[int]] | None = None
    supersede_replaced: Callable[[], list[str]] | None = None
    _delivering: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def reminders(self) -> ReminderReport:
        return queue_due_reminders(
            self.sessions,
            now=self.clock(),
            stages=self.settings.reminder_stages_days,
            zone=self.settings.zone,
        )

    def crls(self) -> list[int]:
        if self.publish_due_crls is None:
            return []
        generations = self.publish_due_crls()
        if generations:
            log.info("re-published the CRL of generation(s) %s", generations)
        return generations

    def supersede(self) -> list[str]:
        """Before the reminder scan, so a superseded certificate gets no reminder."""
        if self.supersede_replaced is None:
            return []
        serials = self.supersede_replaced()
        if serials:
            log.info("revoked %d superseded certificate(s)", len(serials))
        return serials

    def cleanup(self) -> dict[str, int]:
        return delete_expired(
            self.sessions,
            now=self.clock(),
            failed_secret_retention=self.settings.failed_mail_secret_retention,
            sent_retention=self.settings.sent_mail_retention,
        )

    async def deliver(self) -> DeliveryReport:
        async with self._delivering:
            return await self.delivery.deliver_due()

    async def run_all_once(self) -> None:
        """Each job once, in the order a fresh start runs them (``renewal run --once``)."""
        await self.delivery.release_abandoned()
        for job in (self.supersede, self.crls, self.reminders, self.cleanup):
            await asyncio.to_thread(_logged(job))
        await self.deliver()

    async def drain(self) -> None:
        """Stop delivering: the mail in flight finishes, claimed but unsent mails go back."""
        self.delivery.request_stop()
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT.total_seconds()):
                async with self._delivering:
                    pass
        except TimeoutError:
            log.error("delivery did not stop within %s; its claims will lapse", SHUTDOWN_TIMEOUT)


def _logged(job: Callable[[], Any]) -> Callable[[], Any]:
    """A job wrapper that logs a failure instead of letting it end the process."""

    def run() -> Any:
        try:
            return job()
        except Exception:
            log.exception("job %s failed; it runs again at its next time", job.__name__)
            return None

    run.__name__ = job.__name__
    return run


@dataclass
class _RunningJobs:
    """The job runs in flight, so a stop can let them finish before the scheduler goes.

    APScheduler's ``AsyncIOExecutor.shutdown`` cancels every pending future, even with
    ``wait=False``: a reminder scan still in its thread then ends in a logged
    ``CancelledError`` while the scan itself runs on. Every job is therefore a coroutine
    of ours (synchronous ones in a thread) that a stop awaits, bounded, before shutdown.
    """

    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def wrap(self, job: Callable[[], Any]) -> Callable[[], Any]:
        async def run() -> Any:
            task = asyncio.current_task()
            if task is not None:
                self.tasks.add(task)
            try:
                result = job()
                return await result if asyncio.iscoroutine(result) else result
            finally:
                if task is not None:
                    self.tasks.discard(task)

        run.__name__ = job.__name__
        return run

    def threaded(self, job: Callable[[], Any]) -> Callable[[], Any]:
        logged = _logged(job)

        async def in_thread() -> Any:
            return await asyncio.to_thread(logged)

        in_thread.__name__ = job.__name__
        return self.wrap(in_thread)

    async def finish(self, within: timedelta) -> None:
        pending = {task for task in self.tasks if task is not asyncio.current_task()}
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=within.total_seconds())
        if late:
            log.error("%d job(s) still running after %s; they are cut off", len(late), within)


def build_scheduler(
    jobs: RenewalJobs,
    *,
    poll_interval: timedelta,
    start: datetime | None = None,
    running: _RunningJobs | None = None,
) -> AsyncIOScheduler:
    """The scheduler with every job; all of them also run right at start."""
    start = start or datetime.now(UTC)
    running = running or _RunningJobs()
    hour, minute = jobs.settings.daily_run_hour_minute
    scheduler = AsyncIOScheduler(
        timezone=UTC,
        # One instance per job (an overlapping reminder scan would only wait on locks);
        # a late run is still run, missed runs collapse into one.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )

    async def deliver() -> None:
        try:
            await jobs.deliver()
        except Exception:
            log.exception("mail delivery run failed; it runs again at the next poll")

    scheduler.add_job(
        running.wrap(deliver),
        IntervalTrigger(seconds=poll_interval.total_seconds()),
        id="deliver",
        next_run_time=start,
    )
    scheduler.add_job(
        running.threaded(jobs.supersede),
        CronTrigger(hour=hour, minute=minute, timezone=UTC),
        id="supersede",
        next_run_time=start,
    )
    scheduler.add_job(
        running.threaded(jobs.reminders),
        CronTrigger(hour=hour, minute=minute, timezone=UTC),
        id="reminders",
        next_run_time=start,
    )
    scheduler.add_job(
        running.threaded(jobs.crls),
        IntervalTrigger(seconds=jobs.settings.crl_check_interval.total_seconds()),
        id="crls",
        next_run_time=start,
    )
    scheduler.add_job(
        running.threaded(jobs.cleanup),
        IntervalTrigger(seconds=jobs.settings.cleanup_interval.total_seconds()),
        id="cleanup",
        next_run_time=start,
    )
    return scheduler


async def run_until_stopped(
    jobs: RenewalJobs, *, poll_interval: timedelta, stop: asyncio.Event
) -> None:
    """Run the scheduler until ``stop`` is set, then shut down cleanly."""
    await jobs.delivery.release_abandoned()
    running = _RunningJobs()
    scheduler = build_scheduler(jobs, poll_interval=poll_interval, running=running)
    scheduler.start()
    log.info("renewal process started as worker %s", jobs.delivery.worker)
    try:
        await stop.wait()
    finally:
        log.info("renewal process stopping")
        scheduler.pause()  # no new runs; the ones in flight finish below
        jobs.delivery.request_stop()
        await running.finish(SHUTDOWN_TIMEOUT)
        scheduler.shutdown(wait=False)
        await jobs.drain()
        log.info("renewal process stopped")
