"""Settings of the renewal process and of mail delivery (read once by the CLI, passed down)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from store import DEFAULT_TIME_ZONE, time_zone

# Two months ahead as the portal promises (seed 000), then two late nudges.
DEFAULT_REMINDER_STAGES = (60, 14, 3)

# Backoff of a mail that could not be delivered: 30 s, 1 min, 2 min, ... capped at one hour,
# so a short SMTP outage costs seconds and a long one does not hammer the server.
DEFAULT_RETRY_BASE = timedelta(seconds=30)
DEFAULT_RETRY_CAP = timedelta(hours=1)
# 24 attempts with that backoff span roughly 18 hours: an SMTP outage over a night is
# survived; after that the row is `failed` and ops see it in `brokergate mail status`.
DEFAULT_MAX_ATTEMPTS = 24
# A claimed row belongs to one worker for this long. It must exceed the SMTP timeout by a
# wide margin (a worker renews its lease before each send when less than one timeout is left),
# and it bounds how long a mail claimed by a crashed worker on *another* host waits.
DEFAULT_CLAIM_LEASE = timedelta(minutes=5)
DEFAULT_SMTP_TIMEOUT = timedelta(seconds=30)


@dataclass(frozen=True, kw_only=True)
class RenewalSettings:
    reminder_stages_days: tuple[int, ...] = field(
        default=DEFAULT_REMINDER_STAGES,
        metadata={"help": "Days before expiry at which a reminder mail is queued, one per stage"},
    )
    daily_run_at: str = field(
        default="06:00",
        metadata={
            "help": "Time of day (HH:MM, UTC) of the daily reminder scan; it also runs at start"
        },
    )
    crl_check_interval: timedelta = field(
        default=timedelta(hours=1),
        metadata={
            "help": "How often CRLs are checked and re-published when their nextUpdate is near"
        },
    )
    cleanup_interval: timedelta = field(
        default=timedelta(hours=1),
        metadata={
            "help": "How often expired sessions, TANs, device tokens, rate-limit rows and "
            "activation tokens are deleted"
        },
    )
    failed_mail_secret_retention: timedelta = field(
        default=timedelta(days=7),
        metadata={
            "help": "Secrets of mails that failed permanently are wiped after this long (a "
            "`mail retry` after that fails with a clear error)"
        },
    )
    sent_mail_retention: timedelta = field(
        default=timedelta(days=90),
        metadata={"help": "Sent outbox rows (already without secrets) are deleted after this"},
    )
    time_zone: str = field(
        default=DEFAULT_TIME_ZONE,
        metadata={
            "help": "IANA time zone of the brokers: days before expiry are counted in its "
            "calendar days, and mails show dates and times in it (e.g. Europe/Amsterdam)"
        },
    )

    def __post_init__(self) -> None:
        if not self.reminder_stages_days or any(d <= 0 for d in self.reminder_stages_days):
            raise ValueError("reminder_stages_days must be a non-empty list of positive days")
        if len(set(self.reminder_stages_days)) != len(self.reminder_stages_days):
            raise ValueError("reminder_stages_days must not repeat a stage")
        hh, _, mm = self.daily_run_at.partition(":")
        if not (hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60):
            raise ValueError(f"daily_run_at must be HH:MM, got {self.daily_run_at!r}")
        for name in ("crl_check_interval", "cleanup_interval"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        time_zone(self.time_zone)  # ValueError naming the zone and what to write instead

    @property
    def zone(self) -> ZoneInfo:
        """:attr:`time_zone` as a zone."""
        return time_zone(self.time_zone)

    @property
    def daily_run_hour_minute(self) -> tuple[int, int]:
        hh, _, mm = self.daily_run_at.partition(":")
        return int(hh), int(mm)


@dataclass(frozen=True, kw_only=True)
class MailSettings:
    smtp_host: str = field(default="127.0.0.1", metadata={"help": "SMTP server host"})
    smtp_port: int = field(default=8025, metadata={"help": "SMTP server port"})
    tls: Literal["none", "starttls", "implicit"] = field(
        default="none",
        metadata={"help": "none (local sink only), starttls (port 587) or implicit (port 465)"},
    )
    tls_ca_file: str | None = field(
        default=None,
        metadata={
            "help": "PEM file of CAs that verify the SMTP server (default: the system's store)"
        },
    )
    username: str | None = field(default=None, metadata={"help": "SMTP AUTH user, if any"})
    password: str = field(
        default="", repr=False, metadata={"help": "SMTP AUTH password", "secret": True}
    )
    from_addr: str = field(
        default="brokergate <no-reply@localhost>", metadata={"help": "From: of every mail"}
    )
    reply_to: str | None = field(default=None, metadata={"help": "Reply-To: (broker support)"})
    timeout: timedelta = field(
        default=DEFAULT_SMTP_TIMEOUT,
        metadata={"help": "Timeout of each SMTP connect and command"},
    )
    poll_interval: timedelta = field(
        default=timedelta(seconds=5),
        metadata={"help": "How often the outbox is checked for mails that are due"},
    )
    batch_size: int = field(
        default=20, metadata={"help": "Mails claimed and sent over one SMTP connection at a time"}
    )
    claim_lease: timedelta = field(
        default=DEFAULT_CLAIM_LEASE,
        metadata={
            "help": "How long a claimed mail belongs to one worker; must exceed 3 x timeout "
            "(see docs/mail.md)"
        },
    )
    retry_base: timedelta = field(
        default=DEFAULT_RETRY_BASE, metadata={"help": "First retry delay (doubles per attempt)"}
    )
    retry_cap: timedelta = field(
        default=DEFAULT_RETRY_CAP, metadata={"help": "Longest retry delay"}
    )
    max_attempts: int = field(
        default=DEFAULT_MAX_ATTEMPTS,
        metadata={"help": "Attempts before a temporarily failing mail is marked failed"},
    )

    def __post_init__(self) -> None:
        if not 0 < self.smtp_port < 65536:
            raise ValueError("smtp_port must be between 1 and 65535")
        if self.tls == "none" and self.username:
            # SECURITY: never send SMTP AUTH credentials over a clear-text connection.
            raise ValueError("SMTP AUTH (username) needs tls = starttls or implicit")
        if self.batch_size < 1 or self.max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")
        if self.timeout <= timedelta(0) or self.poll_interval <= timedelta(0):
            raise ValueError("timeout and poll_interval must be positive")
        if self.retry_base <= timedelta(0) or self.retry_cap < self.retry_base:
            raise ValueError("retry_base must be positive and retry_cap at least retry_base")
        if self.claim_lease < 3 * self.timeout:
            raise ValueError(
                f"claim_lease ({self.claim_lease}) must be at least 3 x timeout "
                f"({self.timeout}) so a lease never lapses during a send"
            )
