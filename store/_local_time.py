"""Dates, times and plural forms as brokers read them, per language, in their time zone.

Shared by the gateway's pages and the renewal mails, so a page and a mail about the same
certificate say the same date. Formatting and plural rules come from Babel (CLDR data),
not from hand-written patterns: German "noch 1 Tag" / "noch 2 Tage", English "1 day" /
"2 days", Dutch "1 dag" / "2 dagen".

Times carry their zone's short name (MEZ/MESZ in German, CET/CEST otherwise): a
certificate that ends at 23:39 UTC on 23 December ends on 24 December at 00:39 in
Berlin, and the broker sees "24.12.2026, 00:39 MEZ".
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_time, get_timezone_name

__all__ = ["format_local_date", "format_local_datetime", "plural_category"]

_BABEL_LOCALES = {"de": "de_DE", "en": "en_GB", "nl": "nl_NL"}  # our brokers are in Europe
# German brokers read 24.12.2026; English and Dutch read the month's name.
_DATE_FORMATS = {"de": "medium", "en": "long", "nl": "long"}


def _locale(language: str) -> str:
    return _BABEL_LOCALES.get(language, _BABEL_LOCALES["de"])


def format_local_date(value: datetime | date, language: str, zone: ZoneInfo) -> str:
    """``value``'s date in ``zone`` (an aware datetime) or as it is (a date)."""
    day = value.astimezone(zone).date() if isinstance(value, datetime) else value
    return format_date(day, _DATE_FORMATS.get(language, "medium"), locale=_locale(language))


def format_local_datetime(value: datetime, language: str, zone: ZoneInfo) -> str:
    """``value`` in ``zone`` with the zone's short name: ``24.12.2026, 00:39 MEZ``."""
    local = value.astimezone(zone)
    locale = _locale(language)
    return (
        f"{format_local_date(local, language, zone)}, {format_time(local, 'short', locale=locale)}"
        f" {get_timezone_name(local, 'short', locale=locale)}"
    )


def plural_category(count: int, language: str) -> str:
    """The CLDR plural category of ``count`` in ``language`` ("one", "other", …)."""
    return str(Locale.parse(_locale(language)).plural_form(count))
