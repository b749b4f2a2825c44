"""Rendering of outbox rows into a subject, a text part and an HTML part (Jinja2).

Templates live in ``_templates/<locale>/<name>.{subject.txt,txt,html}``; the
HTML parts extend ``_templates/base.html``. German is the default; a row's
locale picks English or Dutch; any other locale falls back to German. The
template names and the values each one needs are listed in :data:`TEMPLATES`
and in docs/mail.md (the code that queues a mail must supply them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2

from renewal._errors import MissingMailValue, UnknownTemplate
from store import (
    DEFAULT_TIME_ZONE,
    format_local_date,
    format_local_datetime,
    plural_category,
)
from store import (
    time_zone as parse_time_zone,
)

LOCALES = ("de", "en", "nl")
DEFAULT_LOCALE = "de"  # the brokers' portal is German first (seeds 000, 001)
# Path of the account page, below gateway.public_url (where brokers download a renewal).
ACCOUNT_PATH = "/_gateway/account"
# Used only when an activation row carries a bare token instead of the full link; the
# logins code builds the same form (<public_url>/_gateway/activate/<token>).
ACTIVATION_PATH = "/_gateway/activate"
SECRET_MASK = "••••••"

# Each template with the context keys it requires (optional ones are documented in
# docs/mail.md) and the secret keys it requires. ``activation`` needs either secret
# ``link`` or ``token``, checked in :meth:`MailRenderer.render`.
TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "certificate_password": (
        ("name", "serial", "not_after", "friendly_name", "broker_number"),
        ("password",),
    ),
    "reminder": (("name", "serial", "not_after"), ()),
    "email_tan": ((), ("tan",)),
    "activation": (("name",), ()),
    "email_change_confirm": (("name",), ("link",)),
    "email_change_notice": (("name", "new_email"), ()),
    "password_reset_link": (("name",), ("link",)),
    "password_reset_notice": (("name",), ()),
    "second_factor_reset_notice": (("name",), ()),
    "twofa_setup_code": (("name",), ("code",)),
    "generic": (("subject", "body"), ()),
}


def _as_datetime(value: Any) -> datetime | date:
    """A context value as a date (``2026-03-05``) or an aware moment (naive = UTC, as the
    store keeps every time)."""
    if isinstance(value, str):
        value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not isinstance(value, date):
        raise TypeError(f"expected a date or ISO 8601 string, got {value!r}")
    return value


def format_date(value: Any, locale: str, zone: ZoneInfo | None = None) -> str:
    """A date as brokers read it, in their zone (Babel): 24.12.2026 (de), 24 December 2026
    (en), 24 december 2026 (nl)."""
    return format_local_date(_as_datetime(value), locale, zone or ZoneInfo(DEFAULT_TIME_ZONE))


def format_datetime(value: Any, locale: str, zone: ZoneInfo | None = None) -> str:
    """A moment in the brokers' zone, with the zone: ``24.12.2026, 00:39 MEZ``."""
    moment = _as_datetime(value)
    if not isinstance(moment, datetime):
        return format_date(moment, locale, zone)
    return format_local_datetime(moment, locale, zone or ZoneInfo(DEFAULT_TIME_ZONE))


@dataclass(frozen=True, kw_only=True)
class RenderedMail:
    subject: str
    text: str
    html: str
    locale: str


def pick_locale(locale: str | None) -> str:
    """The template locale for a row's locale (``"de-AT"`` → ``"de"``; unknown → German)."""
    base = (locale or "").split("-")[0].split("_")[0].lower()
    return base if base in LOCALES else DEFAULT_LOCALE


class MailRenderer:
    """Renders outbox rows. Stateless apart from the Jinja environment; safe to share.

    Args:
        public_url: ``gateway.public_url``; links in mails (account page, activation)
            are built from it.
        time_zone: the IANA zone dates and times in mails are shown in (the brokers').
    """

    def __init__(self, *, public_url: str, time_zone: str = DEFAULT_TIME_ZONE) -> None:
        self.public_url = public_url.rstrip("/")
        self.zone = parse_time_zone(time_zone)
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(Path(__file__).parent / "_templates"),
            # SECURITY: HTML parts are autoescaped (names and bodies come from users and ops);
            # text parts are not HTML, so escaping there would only garble them.
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
            # A missing value is an error, never an empty string in a broker's mail.
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
        )

    @property
    def account_url(self) -> str:
        return self.public_url + ACCOUNT_PATH

    def render(
        self,
        *,
        template: str,
        locale: str | None,
        context: Mapping[str, Any],
        secrets: Mapping[str, str],
    ) -> RenderedMail:
        """Render one mail.

        Raises:
            UnknownTemplate: ``template`` is not one of :data:`TEMPLATES`.
            MissingMailValue: a value the template needs is absent (e.g. a wiped secret).
        """
        if template not in TEMPLATES:
            raise UnknownTemplate(template, list(TEMPLATES))
        required_context, required_secrets = TEMPLATES[template]
        missing = [k for k in required_context if k not in context]
        missing += [f"secret {k}" for k in required_secrets if k not in secrets]
        if missing:
            raise MissingMailValue(template, "missing " + ", ".join(missing))
        lang = pick_locale(locale)
        values: dict[str, Any] = {**context, **secrets}
        values.update(locale=lang, account_url=self.account_url, portal_url=self.public_url)
        if template == "activation":
            values["activation_link"] = self._activation_link(secrets)
        env = self._env.overlay()
        env.filters["date"] = lambda v: format_date(v, lang, self.zone)
        env.filters["datetime"] = lambda v: format_datetime(v, lang, self.zone)
        # CLDR plural category ("one", "other"): "1 Tag" / "2 Tage", "1 day" / "2 days".
        env.filters["plural"] = lambda n: plural_category(int(n), lang)
        try:
            subject = env.get_template(f"{lang}/{template}.subject.txt").render(values)
            # SECURITY: one line only; a newline in a subject would start a new header.
            subject = " ".join(subject.split())
            values["subject"] = subject
            text = env.get_template(f"{lang}/{template}.txt").render(values)
            html = env.get_template(f"{lang}/{template}.html").render(values)
        except jinja2.UndefinedError as exc:
            raise MissingMailValue(template, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise MissingMailValue(template, f"a value has the wrong form: {exc}") from None
        return RenderedMail(subject=subject, text=text + "\n", html=html + "\n", locale=lang)

    def render_masked(
        self, *, template: str, locale: str | None, context: Mapping[str, Any]
    ) -> RenderedMail:
        """Render with every secret replaced by a mask (for ``brokergate mail show``)."""
        _, required_secrets = TEMPLATES.get(template, ((), ()))
        secrets = dict.fromkeys(required_secrets, SECRET_MASK)
        if template == "activation":
            secrets["link"] = f"{self.public_url}{ACTIVATION_PATH}/{SECRET_MASK}"
        return self.render(template=template, locale=locale, context=context, secrets=secrets)

    def _activation_link(self, secrets: Mapping[str, str]) -> str:
        if "link" in secrets:
            return secrets["link"]
        if "token" in secrets:
            return f"{self.public_url}{ACTIVATION_PATH}/{quote(secrets['token'], safe='')}"
        raise MissingMailValue("activation", "missing secret link (or token)")
