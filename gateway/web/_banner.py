"""The certificate-expiry banner and the account menu on the gateway's pages (seed 000:
a reminder in the portal about two months before expiry), and noting a certificate's first
use at single sign-on (which supersedes the certificate it renewed)."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from markupsafe import Markup

from gateway.auth._certificate_identity import Identity
from gateway.auth._forward_auth import DECISION_ROUTES
from gateway.auth._middleware import request_state
from gateway.logins._certificates import (
    note_certificate_used,
)
from gateway.web._common import P, ctx, factory, now_of
from gateway.web._firm import OFFICES, USERS, firm_menu_links
from gateway.web._pages import page_language
from gateway.web._renewal_notice import load_renewal_state, renewal_banner
from store import Level, transaction

_NOTED_LIMIT = 100_000  # fingerprints remembered per replica (see noted_certificates)


_BANNER: contextvars.ContextVar[Markup | None] = contextvars.ContextVar(
    "logins_banner", default=None
)


# The request whose page gets the account menu (None: no menu, see drop_account_nav).
_NAV: contextvars.ContextVar[web.Request | None] = contextvars.ContextVar(
    "logins_nav", default=None
)
# The head users' links in that menu (issue 13): ("Users", "Sub-offices") shown?
_FIRM_NAV: contextvars.ContextVar[tuple[bool, bool]] = contextvars.ContextVar(
    "logins_firm_nav", default=(False, False)
)


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
        # The menu on every page of ours, also the ones shown for portal paths (the
        # policy's 2FA prompt, step-up; issue 16): built when a page renders it.
        token, nav_token = _BANNER.set(None), _NAV.set(request)
        firm_token = _FIRM_NAV.set((False, False))
        try:
            await _note_certificate_login(request)
            if _shows_banner(request):
                await _compute_banner(request)
                await _compute_firm_nav(request)
            return await handler(request)
        finally:
            _BANNER.reset(token)
            _NAV.reset(nav_token)
            _FIRM_NAV.reset(firm_token)

    return impl


def _shows_banner(request: web.Request) -> bool:
    """Our own pages, not static files, and not a front's decision (issue 11): that one is
    about a portal path, whose pages carry no banner in standalone mode either, and it is
    the hot path of forward-auth mode, which must not read the store for it."""
    if not request.path.startswith(P) or request.path.startswith(f"{P}/static/"):
        return False
    resource = request.match_info.route.resource
    return resource is None or resource.name not in DECISION_ROUTES


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


def _proven_user(request: web.Request) -> Identity | None:
    """Who the banner and the menu are for: a session of basic or more. A restricted one
    is attributed to the firm, not proven to be this user: no banner, no menu."""
    try:
        identity = request_state(request).identity
    except RuntimeError:
        return None
    if identity is None or not identity.level.satisfies(Level.BASIC):
        return None
    return identity


async def _compute_banner(request: web.Request) -> None:
    identity = _proven_user(request)
    if identity is None:
        return
    banner = renewal_banner(request, await load_renewal_state(request, identity.user_id))
    if banner is not None:
        _BANNER.set(_STYLE + banner)


async def _compute_firm_nav(request: web.Request) -> None:
    identity = _proven_user(request)
    if identity is None:
        return

    def run() -> tuple[bool, bool]:
        with transaction(factory(request)) as session:
            return firm_menu_links(session, identity.user_id)

    _FIRM_NAV.set(await asyncio.to_thread(run))


def expiry_banner() -> Markup:
    """Jinja global used by ``base.html``: the banner for this request, or nothing."""
    return _BANNER.get() or Markup("")


def account_nav() -> Markup:
    """Jinja global used by ``base.html``: the "My account" link while a broker is logged in
    (basic or more: a restricted session is attributed to the firm, not proven to be this
    user)."""
    request = _NAV.get()
    if request is None or _proven_user(request) is None:
        return Markup("")
    from gateway.web._pages import CATALOGS

    language = page_language(request)
    catalogs = request.app[CATALOGS]
    # seed 000: "Mein Konto / Abmelden" in the portal's menu; seed 003: "Gebruikers"
    # ("Subkantoren") for head users (of the head office).
    users, offices = _FIRM_NAV.get()
    links = Markup('<a href="{}">{}</a>').format(
        f"{P}/account", catalogs.translate(language, "logins.nav.account")
    )
    for shown, url, key in (
        (users, USERS, "firm.nav.users"),
        (offices, OFFICES, "firm.nav.offices"),
    ):
        if shown:
            links += Markup(' · <a href="{}">{}</a>').format(url, catalogs.translate(language, key))
    return _STYLE + Markup('<nav class="account-nav" aria-label="{}">{}</nav>').format(
        catalogs.translate(language, "logins.nav.label"), links
    )


def drop_account_nav() -> None:
    """The handler ended the broker's session (the middleware computed the menu and banner
    before): the page it answers with offers neither "My account" nor the expiry banner."""
    _NAV.set(None)
    _BANNER.set(None)
