"""Dates and times on the gateway's pages: in the page's language and the brokers' time
zone (``gateway.time_zone``), by Babel (``store.format_local_*``), the same way the renewal
mails show them ("24.12.2026, 00:39 MEZ")."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway._state import SETTINGS
from gateway.web._pages import page_language
from store import format_local_date, format_local_datetime

__all__ = ["date_for", "format_date", "format_time", "time_for"]


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
