"""What a broker is told about renewal, on every page of ours and once in the portal
(issue 15; seed 000: "Etwa zwei Monate vor Ablauf erhalten Sie rechtzeitig eine Erinnerung
im Portal und per E-Mail").

* Within the reminder window of the certificate in use: "Ihr Zertifikat läuft am … ab
  (noch N Tage)" with the way to renew — as a banner on our pages, and once per session as
  an interstitial page before the first portal page after a certificate login.
* After a download, until the new certificate has logged in: "Bitte binden Sie Ihr neues
  Zertifikat ein" with the import steps for the broker's system — instead of the expiry
  reminder, because renewing again would not help.

The facts come from ``gateway.logins.renewal_state`` (one store read, only on our own
pages and at the one interstitial per session); dates and days in the brokers' zone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from markupsafe import Markup

from gateway._settings import RESERVED_PREFIX
from gateway._state import CLOCK, FACTORY, SETTINGS
from gateway.auth._certificate_identity import CERTIFICATE_METHOD, Identity
from gateway.auth._request_state import SESSIONS, RequestState
from gateway.logins._certificates import RenewalState, renewal_state
from gateway.web._formatting import date_for
from gateway.web._pages import CATALOGS, page_language, render_page
from store import REMINDER_WINDOW_DAYS, reminder_banner_due, transaction

__all__ = [
    "NOTICE_SEEN_KEY",
    "ImportSteps",
    "import_steps_for",
    "is_navigation",
    "load_renewal_state",
    "reminder_due",
    "renewal_banner",
    "renewal_interstitial",
    "renewal_interstitial_from",
]

NOTICE_SEEN_KEY = "renewal.notice_seen"  # session data: the interstitial was shown once


@dataclass(frozen=True, kw_only=True)
class ImportSteps:
    """The import steps of one system, as message keys of ``logins.import.*``."""

    system: str  # "windows", "macos", "firefox"
    keys: tuple[str, ...]


_STEPS = {
    "windows": (
        "logins.import.win1",
        "logins.import.win2",
        "logins.import.win3",
        "logins.import.win4",
    ),
    "macos": ("logins.import.mac1", "logins.import.mac2"),
    "firefox": ("logins.import.ff1", "logins.import.ff2"),
}


def import_steps_for(user_agent: str) -> list[ImportSteps]:
    """The import steps for the browser that sent ``user_agent``: Firefox keeps its own
    certificate store on every system; otherwise the system's store. Unknown: all three."""
    if "Firefox/" in user_agent:
        systems = ["firefox"]
    elif "Macintosh" in user_agent or "Mac OS X" in user_agent:
        systems = ["macos"]
    elif "Windows" in user_agent:
        systems = ["windows"]
    else:
        systems = ["windows", "macos", "firefox"]
    return [ImportSteps(system=s, keys=_STEPS[s]) for s in systems]


async def load_renewal_state(request: web.Request, user_id: int) -> RenewalState:
    """The broker's renewal state now (one store read, in a thread)."""
    app = request.app
    now, zone = app[CLOCK](), app[SETTINGS].zone

    def load() -> RenewalState:
        with transaction(app[FACTORY]) as session:
            return renewal_state(session, user_id, now, zone)

    return await asyncio.to_thread(load)


def renewal_banner(request: web.Request, state: RenewalState) -> Markup | None:
    """The banner for our pages, or None when there is nothing to say."""
    language = page_language(request)
    catalogs = request.app[CATALOGS]

    def t(key: str, **params: Any) -> str:
        return catalogs.translate(language, key, **params)

    if state.pending_import is not None:
        steps = import_steps_for(request.headers.get("User-Agent", ""))
        items = Markup("").join(
            Markup("<p><strong>{}</strong></p><ol>{}</ol>").format(
                t(f"banner.import.{group.system}"),
                Markup("").join(Markup("<li>{}</li>").format(t(k)) for k in group.keys),
            )
            for group in steps
        )
        return Markup(
            '<div class="banner" role="status"><p><strong>{}</strong></p><p>{}</p>{}<p>{}</p>'
            '<p><a href="{}">{}</a></p></div>'
        ).format(
            t("banner.import.title"),
            t("banner.import.body", date=date_for(request, state.pending_import.not_after)),
            items,
            t("logins.import.after"),
            f"{RESERVED_PREFIX}/account#certificate",
            t("banner.import.account"),
        )
    reminder = state.reminder
    if reminder is None:
        return None
    text = catalogs.translate(
        language,
        "banner.expiring",
        count=reminder.days_left,
        date=date_for(request, reminder.not_after),
        days=reminder.days_left,
    )
    return Markup(
        '<div class="banner" role="status"><p>{}</p><p><a href="{}">{}</a></p></div>'
    ).format(text, f"{RESERVED_PREFIX}/account#certificate", t("banner.renew"))


def is_navigation(request: web.Request) -> bool:
    """A browser's top-level page load (not a script's fetch, an image, a WebSocket)."""
    if request.method != "GET" or request.headers.get("Upgrade"):
        return False
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in request.headers.get("Accept", "")


def reminder_due(request: web.Request, identity: Identity | None) -> datetime | None:
    """The expiry of the certificate ``identity`` logged in with, when it is within the
    reminder window (else None): the cheap check, no store read, before the interstitial
    and the portal banner."""
    if identity is None or identity.method != CERTIFICATE_METHOD:
        return None
    not_after = identity.cert_not_after
    now = request.app[CLOCK]()
    if not_after is None or not reminder_banner_due(not_after, now, REMINDER_WINDOW_DAYS):
        return None
    return not_after


def renewal_interstitial_from(identity: Identity, now: datetime) -> datetime | None:
    """From when :func:`renewal_interstitial` may show its page to ``identity`` (at or
    before ``now``: from now on), or None: never (not logged in by certificate, or the
    certificate has expired). The decision memo (issue 11) reuses an allow only until then."""
    not_after = identity.cert_not_after
    if identity.method != CERTIFICATE_METHOD or not_after is None or now >= not_after:
        return None
    # reminder_banner_due: now < not_after and not_after - now <= the window
    return not_after - timedelta(days=REMINDER_WINDOW_DAYS)


async def renewal_interstitial(
    request: web.Request, state: RequestState, next_path: str
) -> web.Response | None:
    """Once per session, within the reminder window, before the first portal page after a
    certificate login: the renewal page instead (issue 15), or None to go on.

    Cheap checks first: no store read unless the page is due. Showing it records it in the
    session (one write per session), so "Später" is a plain link back to the portal page.
    """
    identity, session = state.identity, state.session
    not_after = reminder_due(request, identity)
    if identity is None or session is None or not_after is None:
        return None
    if session.data.get(NOTICE_SEEN_KEY) or not is_navigation(request):
        return None
    now = request.app[CLOCK]()
    renewal = await load_renewal_state(request, identity.user_id)
    state.session = await asyncio.to_thread(
        request.app[SESSIONS].update,
        session,
        now=now,
        data={**session.data, NOTICE_SEEN_KEY: now.isoformat()},
    )
    pending = renewal.pending_import
    days = renewal.in_use.days_left if renewal.in_use is not None else 0
    context = {
        "next": next_path,
        "pending": pending is not None,
        "date": date_for(request, pending.not_after if pending else not_after),
        "days": days,
        "steps": import_steps_for(request.headers.get("User-Agent", "")),
    }
    return render_page(request, "renewal_notice.html", context)
