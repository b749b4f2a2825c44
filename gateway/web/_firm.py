"""What the head users' pages (issue 13, seed 003 "Gebruikers" / "Subkantoren") share: their
paths, the one refusal, the actor, the product catalogue in the page's language, and the
account menu's firm links.

SECURITY: every id from a URL or a form goes through ``ca.authorise_user`` /
``ca.authorise_office``; whatever they refuse (missing, another firm's, an office the actor
does not administer) and every page an employee asks for gets the SAME answer:
:func:`refuse`, the gateway's 404 page, so nobody can tell "missing" from "foreign".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

from aiohttp import web
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ca import FirmSettings, administered_offices
from gateway.auth._middleware import require_csrf
from gateway.web._common import P, client_addr, ctx, now_of, read_form, require_fresh
from gateway.web._pages import page_language, render_page
from store import AuditEvent, Level, Office, User

FIRM = f"{P}/firm"
USERS = f"{FIRM}/users"
OFFICES = f"{FIRM}/offices"
_ID_DIGITS = 18  # ids are 64-bit integers at most; anything longer is no id of ours


def refuse() -> NoReturn:
    """SECURITY: the one refusal of the firm pages, the same as a page that does not exist."""
    raise web.HTTPNotFound()


def parse_id(text: str | None) -> int:
    """An id from a URL or a form; anything that is not one is refused like a foreign id."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > _ID_DIGITS:
        refuse()
    return int(text)


@dataclass(frozen=True, kw_only=True)
class FirmPost:
    """A checked change of a head user: the form (its CSRF token verified), the id in the
    URL (``None`` for a "new" form), who is logged in (strong and fresh), when and from where."""

    form: Any  # the posted form (aiohttp MultiDictProxy)
    target: int | None
    user_id: int
    now: datetime
    client: str | None

    @property
    def id(self) -> int:
        """The URL's id, for the forms posted to ``<base>/<id>``."""
        assert self.target is not None, "firm_post(id_key=None) has no id"
        return self.target


async def firm_post(request: web.Request, *, base: str, id_key: str | None) -> FirmPost:
    """Every change on the firm pages starts here: CSRF, the URL's id, a fresh strong login
    (a stale one goes to the re-authentication and back to ``base/<id>`` or ``base/new``)."""
    form = await read_form(request)
    require_csrf(request, form)
    target = parse_id(request.match_info[id_key]) if id_key is not None else None
    back = f"{base}/{target}" if target is not None else f"{base}/new"
    user_id = require_fresh(request, level=Level.STRONG, back=back)
    return FirmPost(
        form=form, target=target, user_id=user_id, now=now_of(request), client=client_addr(request)
    )


@dataclass(frozen=True, kw_only=True)
class Actor:
    """The logged-in head user and the offices they administer (head office first)."""

    user: User
    offices: list[Office]

    @property
    def administers_sub_offices(self) -> bool:
        """The head office's head user: the only one who sees "Sub-offices"."""
        return self.user.office.is_head_office and any(o.is_head_office for o in self.offices)


def load_actor(session: Session, user_id: int) -> Actor:
    """The actor, or :func:`refuse` for anyone who administers no office (employees)."""
    user = session.get(User, user_id)
    if user is None:
        refuse()
    offices = administered_offices(session, user)
    if not offices:
        refuse()
    return Actor(user=user, offices=offices)


def audit_mark(session: Session) -> int:
    """The newest audit event's id now: :func:`stamp_client` marks the ones after it."""
    return session.scalar(select(func.max(AuditEvent.id))) or 0


def stamp_client(session: Session, mark: int, actor: str, client_addr: str | None) -> None:
    """Add where the request came from to the audit events ``actor`` recorded after
    ``mark`` in this transaction: the ca functions audit what changed, the page knows the
    client's address (as the account pages record it)."""
    if client_addr is None:
        return
    session.flush()
    session.execute(
        update(AuditEvent)
        .where(AuditEvent.id > mark, AuditEvent.actor == actor, AuditEvent.client_addr.is_(None))
        .values(client_addr=client_addr)
    )


def firms(request: web.Request) -> FirmSettings:
    return ctx(request).firms


def product_names(request: web.Request) -> list[tuple[str, str]]:
    """(key, name in the page's language) of every catalogue product, in catalogue order."""
    language = page_language(request)
    return [(p.key, p.name(language)) for p in firms(request).products]


def office_label(office: Office) -> str:
    """The office as lists show it: "S1-1 · Office North"; a head office named like its
    number shows the number once."""
    return office.number if office.name == office.number else f"{office.number} · {office.name}"


def show_firm(
    request: web.Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    """Render ``firm/<template>`` with the paths the firm templates link to."""
    values: dict[str, Any] = {"users_url": USERS, "offices_url": OFFICES}
    values.update(context or {})
    return render_page(request, f"firm/{template}", values, status=status)


def checked_rights(form: Mapping[str, Any], allowed: list[str]) -> tuple[list[str], bool]:
    """The ``right`` checkboxes of a form: (the ticked keys the office allows, all allowed?).

    A key the office does not have (or the catalogue does not know) makes the second value
    False: the form is shown again with the rights field's error, nothing is written."""
    getall = getattr(form, "getall", None)
    ticked = [v for v in (getall("right", []) if getall else []) if isinstance(v, str)]
    ok = all(key in allowed for key in ticked)
    return sorted({key for key in ticked if key in allowed}), ok


def firm_menu_links(session: Session, user_id: int) -> tuple[bool, bool]:
    """(show "Users", show "Sub-offices") in the account menu for ``user_id``: head users
    only; "Sub-offices" for the head office's head user only."""
    user = session.get(User, user_id)
    if user is None:
        return False, False
    offices = administered_offices(session, user)
    if not offices:
        return False, False
    return True, Actor(user=user, offices=offices).administers_sub_offices
