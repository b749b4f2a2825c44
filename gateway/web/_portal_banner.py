"""The renewal banner inside the portal's own pages (issue 15, ``portal_renewal_banner``,
off by default).

The interstitial (``_renewal_notice``) tells a broker once per session; a portal that wants
a lasting reminder of its own reads the identity headers (days left, renewal URL). Where
the portal can do neither, this puts the same banner as on our pages at the top of each
portal page a certificate broker opens within the reminder window: the expiry reminder, or
after a download the "import your new certificate" steps. ``gateway.proxy._html_insert``
decides which answers can take it; this decides whether one is due, with a store read only
for a certificate broker's page loads inside the window.
"""

from __future__ import annotations

from aiohttp import web
from markupsafe import Markup

from gateway._settings import RESERVED_PREFIX
from gateway.auth._middleware import request_state
from gateway.web._pages import page_language
from gateway.web._renewal_notice import (
    is_navigation,
    load_renewal_state,
    reminder_due,
    renewal_banner,
)

__all__ = ["BANNER_ID", "portal_banner"]

BANNER_ID = "brokergate-renewal-banner"  # portal-banner.css styles nothing outside it


async def portal_banner(request: web.Request) -> str | None:
    """The banner's HTML for this portal page, or None when none is due."""
    identity = request_state(request).identity
    if identity is None or reminder_due(request, identity) is None or not is_navigation(request):
        return None
    banner = renewal_banner(request, await load_renewal_state(request, identity.user_id))
    if banner is None:
        return None
    return str(
        Markup('<div id="{}" lang="{}"><link rel="stylesheet" href="{}">{}</div>').format(
            BANNER_ID,
            page_language(request),
            f"{RESERVED_PREFIX}/static/portal-banner.css",
            banner,
        )
    )
