"""The head office's "Sub-offices" pages (issue 13, seed 003 "Subkantoren"): the list, a new
sub-office (optionally mailing an activation link to the office), edit, deactivate /
reactivate, delete (only while none of its users has ever logged in).

* ``GET /_gateway/firm/offices``: the list (strong login);
* ``GET/POST /_gateway/firm/offices/new`` and ``/_gateway/firm/offices/<id>``: the forms;
* ``POST /_gateway/firm/offices/<id>/{deactivate,reactivate,delete}``.

Only the head office's head user has these pages; anyone else gets the firm pages' one
refusal, as does any id ``ca.authorise_office`` refuses (see ``gateway.web._firm``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca import (
    DuplicateOffice,
    DuplicateUser,
    InvalidEmail,
    InvalidOfficeData,
    InvalidUserData,
    NotPermitted,
    OfficeInUse,
    RightNotInOffice,
    UnknownRight,
    authorise_office,
    create_sub_office,
    create_user,
    delete_office,
    normalise_email,
    set_office_active,
    update_office,
)
from gateway._state import SETTINGS
from gateway.auth._request_state import SESSIONS, TRUST
from gateway.logins._activation import activation_link_base, send_activation
from gateway.web._common import (
    ctx,
    factory,
    form_text,
    require_fresh,
    require_user,
    see_other,
)
from gateway.web._firm import (
    OFFICES,
    Actor,
    audit_mark,
    checked_rights,
    firm_post,
    firms,
    load_actor,
    parse_id,
    product_names,
    refuse,
    show_firm,
    stamp_client,
)
from gateway.web._pages import page_language
from store import Level, Office, User, UserStatus, transaction

# Field limits (the form's maxlength and the server's check): the store's column sizes.
LIMITS = {
    "name": 256,
    "number": 32,
    "address": 256,
    "postcode": 16,
    "city": 128,
    "phone": 64,
    "email": 320,
}
TEXT_FIELDS = ("name", "number", "address", "postcode", "city", "phone", "email")
REQUIRED = frozenset({"name", "number", "email"})
_NOTICES = frozenset({"created", "created_sent", "saved", "deactivated", "reactivated", "deleted"})


def _head_user(actor: Actor) -> Actor:
    """Sub-offices are the head office's head user's business only."""
    if not actor.administers_sub_offices:
        refuse()
    return actor


def _sub_office(session: Session, actor: Actor, office_id: int) -> Office:
    try:
        office = authorise_office(session, actor.user, office_id)
    except NotPermitted:
        refuse()
    if office.is_head_office:
        refuse()  # the head office is no sub-office: not on these pages
    return office


def _load_list(request: web.Request, user_id: int) -> dict[str, Any]:
    with transaction(factory(request)) as session:
        actor = _head_user(load_actor(session, user_id))
        subs = [o for o in actor.offices if not o.is_head_office]
        counts = dict(
            session.execute(
                select(User.office_id, func.count(User.id))
                .where(User.office_id.in_([o.id for o in subs] or [0]))
                .group_by(User.office_id)
            ).all()
        )
        return {
            "head_office": actor.user.office.name,
            "offices": [
                {
                    "id": o.id,
                    "number": o.number,
                    "name": o.name,
                    "city": o.city or "",
                    "email": o.email or "",
                    "rights": set(o.rights),
                    "active": o.active,
                    "users": counts.get(o.id, 0),
                }
                for o in sorted(subs, key=lambda o: (o.name.lower(), o.number))
            ],
        }


async def offices_page(request: web.Request) -> web.StreamResponse:
    user_id = require_user(request, level=Level.STRONG)
    data = await asyncio.to_thread(_load_list, request, user_id)
    notice = request.query.get("done")
    return show_firm(
        request,
        "offices.html",
        {
            **data,
            "products": product_names(request),
            "notice": notice if notice in _NOTICES else None,
        },
    )


# --- the form (new and edit)


@dataclass(kw_only=True)
class OfficeForm:
    """The typed values and each field's error (translation key)."""

    values: dict[str, str] = field(default_factory=lambda: dict.fromkeys(TEXT_FIELDS, ""))
    rights: list[str] = field(default_factory=list)
    send_activation: bool = False
    errors: dict[str, str] = field(default_factory=dict)


def _read(posted: Mapping[str, Any], allowed: list[str]) -> tuple[OfficeForm, bool]:
    form = OfficeForm(send_activation=form_text(posted, "send_activation", 8) == "1")
    for name in TEXT_FIELDS:
        text = form_text(posted, name, LIMITS[name] + 64)
        form.values[name] = " ".join(text.split()) if name != "email" else text.strip()
    form.rights, rights_ok = checked_rights(posted, allowed)
    return form, rights_ok


def _validate(
    session: Session, form: OfficeForm, *, rights_ok: bool, head_office: Office, office_id: int
) -> str | None:
    """Field errors into ``form.errors``; returns the normalised email (None if invalid)."""
    for name in TEXT_FIELDS:
        value = form.values[name]
        if name in REQUIRED and not value:
            form.errors[name] = f"firm.error.office.{name}_empty"
        elif len(value) > LIMITS[name]:
            form.errors[name] = "firm.error.too_long"
    if not rights_ok:
        form.errors["rights"] = "firm.error.rights"
    address: str | None = None
    if "email" not in form.errors:
        try:
            address = normalise_email(form.values["email"])
        except InvalidEmail:
            form.errors["email"] = "firm.error.email_invalid"
    if address is not None:
        taken = session.scalar(
            select(Office.id).where(func.lower(Office.email) == address, Office.id != office_id)
        )
        if taken is not None:
            form.errors["email"] = "firm.error.office.email_taken"
        elif form.send_activation and session.scalar(
            select(User.id).where(func.lower(User.email) == address)
        ):
            form.errors["email"] = "firm.error.office.email_user"
    number = form.values["number"]
    if "number" not in form.errors:
        other = session.scalar(
            select(Office.id).where(
                Office.organisation_id == head_office.organisation_id,
                Office.number == number,
                Office.id != office_id,
            )
        )
        if other is not None:
            form.errors["number"] = "firm.error.office.number_taken"
    return address


def _context(
    request: web.Request, form: OfficeForm, *, actor: Actor, office: Office | None
) -> dict[str, Any]:
    head = actor.user.office
    return {
        "form": form,
        "limits": LIMITS,
        "products": product_names(request),
        "allowed": sorted(head.rights),
        "head_office": head.name,
        "office": None
        if office is None
        else {"id": office.id, "name": office.name, "active": office.active},
    }


class _Invalid(Exception):
    """The form has errors: it is shown again; the transaction rolls back."""

    def __init__(self, context: dict[str, Any]) -> None:
        self.context = context
        super().__init__("invalid form")


def _optional(value: str) -> str | None:
    return value or None


# The message key for each field an InvalidOfficeData can name.
_FIELD_ERRORS = {
    "phone": "firm.error.office.phone_invalid",
    "number": "firm.error.office.number_invalid",
    "email": "firm.error.email_invalid",
    "postcode": "firm.error.too_long",
    "city": "firm.error.too_long",
    "address": "firm.error.too_long",
}


def _ca_error(form: OfficeForm, exc: Exception) -> None:
    """A refusal of the ca layer (its format rules, or a race the page's checks did not
    see): the error goes next to the field it names."""
    if isinstance(exc, (UnknownRight, RightNotInOffice)):
        form.errors["rights"] = "firm.error.rights"
    elif isinstance(exc, DuplicateUser):
        form.errors["email"] = "firm.error.office.email_user"
    elif isinstance(exc, DuplicateOffice):
        if exc.field == "email":
            form.errors["email"] = "firm.error.office.email_taken"
        else:
            form.errors["number"] = "firm.error.office.number_taken"
    elif isinstance(exc, InvalidOfficeData) and exc.field in _FIELD_ERRORS:
        form.errors[exc.field] = _FIELD_ERRORS[exc.field]
    else:
        form.errors["name"] = "firm.error.office.invalid"


async def office_new_page(request: web.Request) -> web.StreamResponse:
    user_id = require_fresh(request, level=Level.STRONG, back=f"{OFFICES}/new")

    def load() -> dict[str, Any]:
        with transaction(factory(request)) as session:
            actor = _head_user(load_actor(session, user_id))
            form = OfficeForm(rights=sorted(actor.user.office.rights))
            return _context(request, form, actor=actor, office=None)

    return show_firm(request, "office_new.html", await asyncio.to_thread(load))


async def office_new_submit(request: web.Request) -> web.StreamResponse:
    checked = await firm_post(request, base=OFFICES, id_key=None)
    posted, user_id = checked.form, checked.user_id
    now = checked.now
    address_of = checked.client
    language = page_language(request)
    link_base = activation_link_base(request.app[SETTINGS].public_url)
    c = ctx(request)

    def run() -> str:
        with transaction(factory(request)) as session:
            mark = audit_mark(session)
            actor = _head_user(load_actor(session, user_id))
            head = actor.user.office
            form, rights_ok = _read(posted, sorted(head.rights))
            address = _validate(session, form, rights_ok=rights_ok, head_office=head, office_id=0)
            if form.errors:
                raise _Invalid(_context(request, form, actor=actor, office=None))
            assert address is not None
            v = form.values
            try:
                office = create_sub_office(
                    session,
                    head_office=head,
                    number=v["number"],
                    name=v["name"],
                    email=address,
                    address=_optional(v["address"]),
                    postcode=_optional(v["postcode"]),
                    city=_optional(v["city"]),
                    phone=_optional(v["phone"]),
                    rights=form.rights,
                    firms=firms(request),
                    now=now,
                    actor=f"user:{user_id}",
                )
                if not form.send_activation:
                    stamp_client(session, mark, f"user:{user_id}", address_of)
                    return "created"
                # seed 003: "Zend e-mail met activatielink naar subkantoor": the office's
                # head user, with the office's address, activates and adds employees.
                head_user = create_user(
                    session,
                    broker_number=actor.user.organisation.broker_number,
                    email=address,
                    name=office.name,
                    now=now,
                    actor=f"user:{user_id}",
                    locale=language,
                    status=UserStatus.PENDING,
                    office=office,
                    firms=firms(request),
                )
            except (InvalidUserData, DuplicateOffice, DuplicateUser) as exc:
                _ca_error(form, exc)
                raise _Invalid(_context(request, form, actor=actor, office=None)) from None
            send_activation(
                session,
                user_id=head_user.id,
                link_base=link_base,
                settings=c.settings,
                mail_sealer=c.outbox_sealer,
                actor=f"user:{user_id}",
                now=now,
                language=language,
            )
            stamp_client(session, mark, f"user:{user_id}", address_of)
            return "created_sent"

    try:
        done = await asyncio.to_thread(run)
    except _Invalid as invalid:
        return show_firm(request, "office_new.html", invalid.context, status=400)
    return see_other(f"{OFFICES}?done={done}")


async def office_edit_page(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.StreamResponse:
    office_id = parse_id(request.match_info["office_id"])
    user_id = require_fresh(request, level=Level.STRONG, back=f"{OFFICES}/{office_id}")

    def load() -> dict[str, Any]:
        with transaction(factory(request)) as session:
            actor = _head_user(load_actor(session, user_id))
            office = _sub_office(session, actor, office_id)
            form = OfficeForm(rights=sorted(office.rights))
            for name in TEXT_FIELDS:
                form.values[name] = getattr(office, name) or ""
            return _context(request, form, actor=actor, office=office)

    context = await asyncio.to_thread(load)
    context["error"] = error
    return show_firm(request, "office_edit.html", context, status=status)


async def office_edit_submit(request: web.Request) -> web.StreamResponse:
    checked = await firm_post(request, base=OFFICES, id_key="office_id")
    posted, user_id = checked.form, checked.user_id
    office_id = checked.id
    now = checked.now
    address_of = checked.client

    def run() -> None:
        with transaction(factory(request)) as session:
            mark = audit_mark(session)
            actor = _head_user(load_actor(session, user_id))
            office = _sub_office(session, actor, office_id)
            head = actor.user.office
            form, rights_ok = _read(posted, sorted(head.rights))
            form.send_activation = False
            address = _validate(
                session, form, rights_ok=rights_ok, head_office=head, office_id=office.id
            )
            if form.errors:
                raise _Invalid(_context(request, form, actor=actor, office=office))
            assert address is not None
            v = form.values
            try:
                update_office(
                    session,
                    office,
                    firms=firms(request),
                    now=now,
                    actor=f"user:{user_id}",
                    name=v["name"],
                    number=v["number"],
                    email=address,
                    address=_optional(v["address"]),
                    postcode=_optional(v["postcode"]),
                    city=_optional(v["city"]),
                    phone=_optional(v["phone"]),
                    rights=form.rights,
                )
            except (InvalidUserData, DuplicateOffice) as exc:
                _ca_error(form, exc)
                raise _Invalid(_context(request, form, actor=actor, office=office)) from None
            stamp_client(session, mark, f"user:{user_id}", address_of)

    try:
        await asyncio.to_thread(run)
    except _Invalid as invalid:
        return show_firm(request, "office_edit.html", invalid.context, status=400)
    return see_other(f"{OFFICES}?done=saved")


async def _change_active(request: web.Request, *, active: bool) -> web.StreamResponse:
    checked = await firm_post(request, base=OFFICES, id_key="office_id")
    user_id = checked.user_id
    office_id = checked.id
    now = checked.now
    address_of = checked.client
    store = request.app[SESSIONS]

    def run() -> None:
        with transaction(factory(request)) as session:
            mark = audit_mark(session)
            actor = _head_user(load_actor(session, user_id))
            office = _sub_office(session, actor, office_id)
            ended = set_office_active(session, office, active, now=now, actor=f"user:{user_id}")
            for uid in ended:  # SECURITY: in the same transaction as the deactivation
                store.end_all_for_user(uid, now, db=session)
            stamp_client(session, mark, f"user:{user_id}", address_of)

    await asyncio.to_thread(run)
    if not active:
        await asyncio.to_thread(request.app[TRUST].refresh)
    return see_other(f"{OFFICES}?done={'reactivated' if active else 'deactivated'}")


async def office_deactivate_submit(request: web.Request) -> web.StreamResponse:
    return await _change_active(request, active=False)


async def office_reactivate_submit(request: web.Request) -> web.StreamResponse:
    return await _change_active(request, active=True)


async def office_delete_submit(request: web.Request) -> web.StreamResponse:
    checked = await firm_post(request, base=OFFICES, id_key="office_id")
    user_id = checked.user_id
    office_id = checked.id
    now = checked.now
    address_of = checked.client

    def run() -> bool:
        with transaction(factory(request)) as session:
            mark = audit_mark(session)
            actor = _head_user(load_actor(session, user_id))
            office = _sub_office(session, actor, office_id)
            try:
                delete_office(session, office, now=now, actor=f"user:{user_id}")
            except OfficeInUse:
                return False
            stamp_client(session, mark, f"user:{user_id}", address_of)
            return True

    if not await asyncio.to_thread(run):
        return await office_edit_page(request, error="firm.error.office.in_use", status=409)
    return see_other(f"{OFFICES}?done=deleted")
