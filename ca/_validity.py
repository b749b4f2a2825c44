"""Calendar validity: "two years" as brokers understand it, not a count of days.

Brokers were promised a certificate "zwei Jahre gültig" (seed 000). 730 days falls one
day short whenever the two years contain a 29 February (issued 2027-06-01, 730 days end on
2029-05-31). So the end is the same day and wall-clock time N calendar years later, in the
brokers' time zone (Europe/Berlin), where "the same day" is read as the broker reads it.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from store import DEFAULT_TIME_ZONE

# The brokers' time zone: the calendar day they read on their certificate (the one zone
# the pages and mails count in too).
BROKER_TIME_ZONE = ZoneInfo(DEFAULT_TIME_ZONE)


def add_calendar_years(moment: datetime, years: int, tz: ZoneInfo = BROKER_TIME_ZONE) -> datetime:
    """The same day and wall-clock time ``years`` calendar years after ``moment``, in UTC.

    29 February maps to 28 February in a year without one. That is how German civil law
    ends a period counted in years (BGB § 188 Abs. 3: when the last month lacks the day,
    the period ends on that month's last day), and it keeps the certificate from ever
    outliving the promised two years; Java's ``LocalDate.plusYears`` and dateutil's
    ``relativedelta`` clamp the same way.

    A wall-clock time that does not exist on the target day (the spring DST gap) resolves
    as zoneinfo does with ``fold=0`` (one hour later on the clock, the same elapsed time).

    Args:
        moment: an aware datetime.
        years: how many calendar years to add (>= 0).

    Returns:
        An aware datetime in UTC.
    """
    if moment.tzinfo is None:
        raise ValueError("add_calendar_years needs an aware datetime")
    local = moment.astimezone(tz)
    year = local.year + years
    day = local.day
    if local.month == 2 and day == 29 and not calendar.isleap(year):
        day = 28  # BGB § 188 Abs. 3, see the docstring
    return local.replace(year=year, day=day, fold=0).astimezone(UTC)
