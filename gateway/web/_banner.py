"""The certificate-expiry banner and the account menu on the gateway's pages (seed 000:
a reminder in the portal about two months before expiry), and noting a certificate's first
use at single sign-on (which supersedes the certificate it renewed)."""

from __future__ import annotations

import asyncio
import contextvars
from datetime import datetime
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from markupsafe import Markup

from gateway.auth._middleware import request_state
from gateway.logins._certificates import (
    current_certificate,
    note_certificate_used,
)
from gateway.web._common import P, ctx, factory, format_date, now_of
from gateway.web._pages import page_language
from store import Level, transaction

_NOTED_LIMIT = 100_000  # fingerprints remembered per replica (see noted_certificates)


_BANNER: contextvars.ContextVar[Markup | None] = contextvars.ContextVar(
    "logins_banner", default=None
)


_NAV: contextvars.ContextVar[Markup | None] = contextvars.ContextVar("logins_nav", default=None)


# Our stylesheet travels with the banner/menu: the core's pages do not link it.
_STYLE = Markup('<link rel="stylesheet" href="{}/static/logins.css">').format(P)


def logins_middleware() -> Any:
    """Factory, innermost middleware:

    * at a certificate single sign-on (a new session opened by certificate), note the
      certificate's first use and supersede the certificate it renewed;
    * on the gateway's own pages, find out whether the broker's certificate expires within
      60 days; ``base.html`` shows the banner through the ``expiry_banner()`` global.
    """

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        token, nav_token = _BANNER.set(None), _NAV.set(None)
        try:
            await _note_certificate_login(request)
            if request.path.startswith(P) and not request.path.startswith(f"{P}/static/"):
                await _compute_banner(request)
            return await handler(request)
        finally:
            _BANNER.reset(token)
            _NAV.reset(nav_token)

    return impl


async def _note_certificate_login(request: web.Request) -> None:
    try:
        state = request_state(request)
    except RuntimeError:
        return
    identity = state.identity
    if not state.new_cookie or identity is None or identity.cert_fingerprint is None:
        return  # only when the auth middleware just opened (or rotated to) a certificate session
    c = ctx(request)
    fingerprint, now = identity.cert_fingerprint, now_of(request)
    if fingerprint in c.noted_certificates:
        return

    def run() -> None:
        with transaction(factory(request)) as session:
            user_id = note_certificate_used(session, fingerprint=fingerprint, now=now)
            authority = c.authority(factory(request))
            if user_id is not None and authority is not None:
                authority.supersede_replaced(session=session, user_id=user_id)

    await asyncio.to_thread(run)
    if len(c.noted_certificates) >= _NOTED_LIMIT:
        c.noted_certificates.clear()
    c.noted_certificates.add(fingerprint)


async def _compute_banner(request: web.Request) -> None:
    try:
        state = request_state(request)
    except RuntimeError:
        return
    identity = state.identity
    # Restricted sessions are attributed to the firm, not proven to be this user: no banner.
    if identity is None or not identity.level.satisfies(Level.BASIC):
        return
    now = now_of(request)
    from gateway.web._pages import CATALOGS

    language = page_language(request)
    catalogs = request.app[CATALOGS]
    # seed 000: "Mein Konto / Abmelden" in the portal's menu.
    _NAV.set(
        _STYLE
        + Markup('<nav class="account-nav" aria-label="{}"><a href="{}">{}</a></nav>').format(
            catalogs.translate(language, "logins.nav.label"),
            f"{P}/account",
            catalogs.translate(language, "logins.nav.account"),
        )
    )

    def lookup() -> datetime | None:
        with transaction(factory(request)) as session:
            view = current_certificate(session, identity.user_id, now)
            return view.not_after if view is not None and view.expiring else None

    not_after = await asyncio.to_thread(lookup)
    if not_after is None:
        return
    days = max(0, (not_after - now).days)
    text = catalogs.translate(
        language, "banner.expiring", date=format_date(not_after, language), days=days
    )
    link = catalogs.translate(language, "banner.renew")
    _BANNER.set(
        _STYLE
        + Markup(
            '<div class="banner" role="status"><p>{}</p><p><a href="{}">{}</a></p></div>'
        ).format(text, f"{P}/account#certificate", link)
    )


def expiry_banner() -> Markup:
    """Jinja global used by ``base.html``: the banner for this request, or nothing."""
    return _BANNER.get() or Markup("")


def account_nav() -> Markup:
    """Jinja global used by ``base.html``: the "My account" link while a broker is logged in."""
    return _NAV.get() or Markup("")


def drop_account_nav() -> None:
    """The handler ended the broker's session (the middleware computed the menu and banner
    before): the page it answers with offers neither "My account" nor the expiry banner."""
    _NAV.set(None)
    _BANNER.set(None)
