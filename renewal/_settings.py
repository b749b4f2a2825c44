"""Settings of the renewal process and of mail delivery (read once by the CLI, passed down)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Two months ahead as the portal promises (seed 000), then two late nudges.
DEFAULT_REMINDER_STAGES = (60, 14, 3)


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

    def __post_init__(self) -> None:
        if not self.reminder_stages_days or any(d <= 0 for d in self.reminder_stages_days):
            raise ValueError("reminder_stages_days must be a non-empty list of positive days")
        hh, _, mm = self.daily_run_at.partition(":")
        if not (hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60):
            raise ValueError(f"daily_run_at must be HH:MM, got {self.daily_run_at!r}")


@dataclass(frozen=True, kw_only=True)
class MailSettings:
    smtp_host: str = field(default="127.0.0.1", metadata={"help": "SMTP server host"})
    smtp_port: int = field(default=8025, metadata={"help": "SMTP server port"})
    tls: Literal["none", "starttls", "implicit"] = field(
        default="none",
        metadata={"help": "none (local sink only), starttls (port 587) or implicit (port 465)"},
    )
    username: str | None = field(default=None, metadata={"help": "SMTP AUTH user, if any"})
    password: str = field(
        default="", repr=False, metadata={"help": "SMTP AUTH password", "secret": True}
    )
    from_addr: str = field(
        default="brokergate <no-reply@localhost>", metadata={"help": "From: of every mail"}
    )
    reply_to: str | None = field(default=None, metadata={"help": "Reply-To: (broker support)"})

    def __post_init__(self) -> None:
        if not 0 < self.smtp_port < 65536:
            raise ValueError("smtp_port must be between 1 and 65535")
