"""Dates and times on the gateway's pages: in the page's language and the brokers' time
zone (``gateway.time_zone``), by Babel (``store.format_local_*``), the same way the renewal
mails show them ("24.12.2026, 00:39 MEZ"); durations by Babel too ("45 Sekunden", "30 Minuten")."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web
from babel.dates import format_timedelta

from gateway._state import SETTINGS
from gateway.web._pages import page_language
from store import format_local_date, format_local_datetime

__all__ = [
    "date_for",
    "duration_for",
    "format_date",
    "format_duration",
    "format_time",
    "time_for",
]


def format_time(value: datetime | None, language: str, zone: ZoneInfo) -> str:
    """``value`` in ``zone`` with the zone's name; "" for None."""
    return "" if value is None else format_local_datetime(value, language, zone)


def format_date(value: datetime | None, language: str, zone: ZoneInfo) -> str:
    """``value``'s date in ``zone``; "" for None."""
    return "" if value is None else format_local_date(value, language, zone)


def time_for(request: web.Request, value: datetime | None) -> str:
    """:func:`format_time` in this request's page language and the configured zone."""
    return format_time(value, page_language(request), request.app[SETTINGS].zone)


def date_for(request: web.Request, value: datetime | None) -> str:
    """:func:`format_date` in this request's page language and the configured zone."""
    return format_date(value, page_language(request), request.app[SETTINGS].zone)


def format_duration(value: timedelta, language: str) -> str:
    """``value`` as words in ``language``: "45 Sekunden", "90 seconds", "30 minuten".

    A unit is used from two of it on (threshold 2), so 90 s stays "90 Sekunden" rather
    than rounding up to "2 Minuten", and a sub-minute setting never reads "0 Minuten"."""
    return format_timedelta(value, threshold=2, format="long", locale=language)


def duration_for(request: web.Request, value: timedelta) -> str:
    """:func:`format_duration` in this request's page language."""
    return format_duration(value, page_language(request))
