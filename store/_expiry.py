"""Certificate expiry arithmetic shared by the renewal reminders and the gateway's pages.

Pure functions of values and the clock; they live in ``store`` so the gateway can show
the renewal reminder without importing ``renewal``.

Days are counted as brokers count them: calendar days in their time zone (default
Europe/Berlin), not whole 24-hour periods. A certificate issued on 3 December at 10:00
for 59 days ends on 31 January at 10:00; on 3 December that is "59 days left", on
31 January "0 days" (the last day), whatever the hour. Month ends, 29 February and the
changes to and from summer time need no special case: the dates are subtracted.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "DEFAULT_TIME_ZONE",
    "REMINDER_WINDOW_DAYS",
    "days_until_expiry",
    "local_date",
    "reminder_banner_due",
    "time_zone",
]

DEFAULT_TIME_ZONE = "Europe/Berlin"  # brokers live in Germany first (seeds 000-002, 004)
# seed 000: "Etwa zwei Monate vor Ablauf erhalten Sie rechtzeitig eine Erinnerung im Portal
# und per E-Mail": the portal's reminder starts with the first (60-day) reminder mail.
REMINDER_WINDOW_DAYS = 60


def time_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name`` (e.g. ``Europe/Berlin``, ``Europe/Amsterdam``).

    Raises:
        ValueError: ``name`` is not a known zone; the message says what to write.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not a time zone: use an IANA name such as Europe/Berlin or "
            "Europe/Amsterdam"
        ) from None


def local_date(moment: datetime, zone: ZoneInfo) -> date:
    """The calendar date of the aware ``moment`` in ``zone``."""
    return moment.astimezone(zone).date()


def days_until_expiry(not_after: datetime, now: datetime, zone: ZoneInfo | None = None) -> int:
    """Calendar days from today until the expiry day, both in ``zone`` (default
    Europe/Berlin): 0 on the last day, and after expiry."""
    if now >= not_after:
        return 0
    where = zone if zone is not None else ZoneInfo(DEFAULT_TIME_ZONE)
    return max(0, (local_date(not_after, where) - local_date(now, where)).days)


def reminder_banner_due(not_after: datetime, now: datetime, first_stage_days: int) -> bool:
    """Whether the portal shows the "your certificate expires soon" reminder.

    Shown from the first reminder stage (``max(renewal.reminder_stages_days)``, 60 days by
    default: the mail and the reminder start together, seed 000) until expiry. The caller
    decides about superseded certificates (a broker who already holds a newer valid one
    needs "import your new certificate", not "renew").
    """
    return now < not_after and not_after - now <= timedelta(days=first_stage_days)
