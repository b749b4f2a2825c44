"""Rendering the gateway's own pages: Jinja2 templates in ``gateway/web/templates``, translated.

For the logins helper (and anyone adding pages)::

    from gateway import render_page, LoginOption, LOGIN_OPTIONS
    app[LOGIN_OPTIONS].append(LoginOption(label_key="login.totp", url="/_gateway/login/totp"))
    return render_page(request, "my_page.html", {"form": ...}, status=200)

``render_page`` adds ``t`` (translate into the page language), ``lang``, ``languages``,
``prefix`` (the reserved prefix), ``csrf`` (the session's token, if any) and
``login_options``. Templates extend ``base.html`` (blocks ``title``, ``content``,
``header_extra``). Language: the broker's choice in the header's switch (the
``__Host-bg-lang`` cookie, see ``gateway.web._language``), else Accept-Language, else the
user's locale, else German.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from gateway._settings import RESERVED_PREFIX
from gateway.auth._forward_auth import OriginalRequest
from gateway.auth._middleware import ORIGINAL_REQUEST, request_state
from gateway.auth._request_state import PAGE_CSRF, PAGE_LANGUAGE_HINT
from gateway.web._i18n import LANGUAGES, Catalogs, negotiate_language
from store import Level

__all__ = [
    "CATALOGS",
    "JINJA",
    "LANGUAGE_COOKIE",
    "LOGIN_OPTIONS",
    "LoginOption",
    "chosen_language",
    "page_language",
    "render_page",
    "safe_next",
    "step_up_context",
]

TEMPLATES_DIR = Path(__file__).parent / "templates"
# The language the broker chose in the pages' switch (issue 16). __Host-: Secure, Path=/
# (the pages shown for portal paths read it too), no Domain; like every __Host-bg… cookie
# it is removed from the requests forwarded to the portal (gateway.proxy._header_rewrite).
LANGUAGE_COOKIE = "__Host-bg-lang"


@dataclass(frozen=True, kw_only=True)
class LoginOption:
    """A way to log in, listed on the login, step-up and certificate-problem pages."""

    label_key: str  # translation key
    url: str  # under the reserved prefix; the page appends ?next=
    reaches: Level = Level.STRONG  # the most this way of logging in can give

    def can_reach(self, level: str) -> bool:
        """Whether this option can give ``level`` (a ``Level`` value; unknown: no)."""
        try:
            return self.reaches.satisfies(Level(level))
        except ValueError:
            return False


CATALOGS = web.AppKey("catalogs", Catalogs)
JINJA = web.AppKey("jinja", jinja2.Environment)
LOGIN_OPTIONS = web.AppKey("login_options", list[LoginOption])
# Set by the auth middleware; read here without importing it (no cycle).


def make_environment(extra_dirs: tuple[Path, ...] = ()) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([*extra_dirs, TEMPLATES_DIR]),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def chosen_language(request: web.Request) -> str | None:
    """The language the broker chose in the switch (the cookie), if any."""
    value = request.cookies.get(LANGUAGE_COOKIE, "")
    return value if value in LANGUAGES else None


def page_language(request: web.Request) -> str:
    """The broker's choice, else Accept-Language, else the user's locale, else German."""
    chosen = chosen_language(request)
    if chosen is not None:
        return chosen
    return negotiate_language(
        request.headers.get("Accept-Language"), request.get(PAGE_LANGUAGE_HINT)
    )


def safe_next(value: str | None) -> str:
    """A local path to return to after a page, or ``/`` (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 for c in value):
        return "/"
    return value


def _here(request: web.Request, fallback: str) -> str:
    """Where the language switch returns to: this page with its query (``next=`` above
    all) when a GET shows it again, else ``fallback`` (the page's ``next``)."""
    original = request.get(ORIGINAL_REQUEST)
    if isinstance(original, OriginalRequest):  # forward-auth: the page is the portal path's
        method, target = original.method, original.target
    else:
        method, target = request.method, request.path_qs
    return safe_next(target if method in ("GET", "HEAD") else fallback)


def step_up_context(request: web.Request, *, next_path: str, required: str) -> dict[str, Any]:
    """The step-up page's values: only the login options that can reach ``required``, and
    whether to offer the 2FA set-up (a logged-in user on a ``strong`` route, issue 14)."""
    identity = request_state(request).identity
    return {
        "next": next_path,
        "required": required,
        "options": [o for o in request.app[LOGIN_OPTIONS] if o.can_reach(required)],
        "can_set_up": required == Level.STRONG.value
        and identity is not None
        and identity.level.satisfies(Level.BASIC),
    }


def render_page(
    request: web.Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    """Render one of the gateway's pages in the request's language."""
    app = request.app
    language = page_language(request)
    catalogs = app[CATALOGS]

    def translate(key: str, **params: Any) -> str:
        return catalogs.translate(language, key, **params)

    values: dict[str, Any] = {
        "t": translate,
        "lang": language,
        "languages": LANGUAGES,
        "prefix": RESERVED_PREFIX,
        "csrf": request.get(PAGE_CSRF, ""),
        "login_options": app[LOGIN_OPTIONS],
        "next": "",
    }
    values.update(context or {})
    values.setdefault("here", _here(request, str(values["next"] or "/")))
    body = app[JINJA].get_template(template).render(values)
    response = web.Response(text=body, status=status, content_type="text/html", charset="utf-8")
    response.headers["Content-Language"] = language
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
