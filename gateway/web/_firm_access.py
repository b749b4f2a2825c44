"""The firm's two clear pages (issue 13): "you may not log in" and "no right for this product".

* :func:`login_refused_page` — ``ca.login_refusal`` said no (user deactivated or not yet
  activated, office or head office deactivated): what happened and whom to ask (the
  refusal's contact, else the broker support). 403, ``no-store`` (``render_page``).
* :func:`no_right_page` — the route needs a product right the user lacks: the product's
  name from the ``[firms]`` catalogue in the page's language and who can give it. 403.

Both are answered the same way in standalone and forward-auth mode (the front shows them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway._state import FIRMS
from gateway.web._pages import CATALOGS, page_language, render_page

if TYPE_CHECKING:
    from ca import LoginRefusal

__all__ = ["login_refused_page", "no_right_page", "refusal_text"]


def refusal_text(request: web.Request, refusal: LoginRefusal) -> str:
    """The refusal as one translated paragraph (for the passkey script's JSON answer)."""
    language = page_language(request)
    catalogs = request.app[CATALOGS]
    reason = catalogs.translate(language, f"firm_access.refused.{refusal.reason}")
    if refusal.contact_name and refusal.contact_email:
        ask = catalogs.translate(
            language,
            "firm_access.refused.ask_person_email",
            name=refusal.contact_name,
            email=refusal.contact_email,
        )
    elif refusal.contact_name:
        ask = catalogs.translate(
            language, "firm_access.refused.ask_person", name=refusal.contact_name
        )
    else:
        ask = catalogs.translate(language, "firm_access.refused.ask_support")
    return f"{reason} {ask}"


def login_refused_page(request: web.Request, refusal: LoginRefusal) -> web.Response:
    return render_page(request, "login_refused.html", {"refusal": refusal}, status=403)


def no_right_page(request: web.Request, right: str, contact: str | None) -> web.Response:
    """The page for a missing ``right`` (a catalogue key; config load checked it)."""
    firms = request.app[FIRMS]
    product = firms.product(right).name(page_language(request)) if right in firms.keys() else right
    return render_page(
        request, "no_right.html", {"product": product, "contact": contact}, status=403
    )
