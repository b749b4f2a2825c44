"""The head users' "Users" pages (issue 13, seed 003 "Gebruikers"): the list, a new user
(who gets the activation mail), edit (name, rights, and the email by the email-change
rules), deactivate / reactivate, and the activation mail again.

* ``GET /_gateway/firm/users``: the list (strong login);
* ``GET/POST /_gateway/firm/users/new`` and ``/_gateway/firm/users/<id>``: the forms;
* ``POST /_gateway/firm/users/<id>/{deactivate,reactivate,activation}``.

Every change needs a fresh strong login (like the email change on "My account"); every id
goes through ``ca.authorise_user`` / ``ca.authorise_office`` (see ``gateway.web._firm``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ca import (
    DuplicateUser,
    InvalidEmail,
    InvalidUserData,
    NotPermitted,
    RightNotInOffice,
    UnknownRight,
    authorise_office,
    authorise_user,
    create_user,
    effective_rights,
    normalise_email,
    office_rights,
    set_user_active,
    set_user_rights,
    visible_users,
)
from gateway._settings import RESERVED_PREFIX
from gateway._state import SETTINGS
from gateway.auth._request_state import SESSIONS, TRUST
from gateway.logins._activation import activation_link_base, send_activation
from gateway.logins._certificates import certificate_overview
from gateway.logins._email_change import EMAIL_CHANGE_PATH, queue_email_change
from gateway.logins._errors import EmailChangeRejected
from gateway.web._common import (
    ctx,
    factory,
    form_text,
    now_of,
    require_fresh,
    require_user,
    see_other,
)
from gateway.web._firm import (
    USERS,
    Actor,
    audit_mark,
    checked_rights,
    firm_post,
    firms,
    load_actor,
    office_label,
    parse_id,
    product_names,
    refuse,
    show_firm,
    stamp_client,
)
from gateway.web._formatting import date_for
from gateway.web._pages import page_language
from store import Level, User, UserStatus, record_audit, transaction

NAME_LIMIT = 256  # ca.create_user's limit
EMAIL_LIMIT = 320  # RFC 5321: 64 + 1 + 255, rounded up as the email-change form does
_NOTICES = frozenset(
    {"created", "saved", "email_sent", "deactivated", "reactivated", "activation_sent"}
)


def _status(user: User) -> str:
    if user.status == UserStatus.PENDING:
        return "pending"
    return "active" if user.status == UserStatus.ACTIVE else "inactive"


def _certificate(request: web.Request, session: Session, user: User) -> dict[str, str]:
    """The user's certificate for the list: valid until / expired / revoked / none."""
    views = certificate_overview(session, user.id, now_of(request), request.app[SETTINGS].zone)
    valid = [v for v in views if v.status == "valid"]
    if valid:
        best = max(valid, key=lambda v: v.not_after)
        return {"status": "valid", "date": date_for(request, best.not_after)}
    if views:
        latest = views[0]
        when = latest.revoked_at if latest.status == "revoked" else latest.not_after
        return {"status": latest.status, "date": date_for(request, when)}
    return {"status": "none", "date": ""}


def _load_list(request: web.Request, user_id: int) -> dict[str, Any]:
    with transaction(factory(request)) as session:
        actor = load_actor(session, user_id)
        users = visible_users(session, actor.user)
        groups = []
        for _, members in groupby(users, key=lambda u: u.office_id):
            rows = list(members)
            office = rows[0].office
            groups.append(
                {
                    "label": office_label(office),
                    "head_office": office.is_head_office,
                    "active": office.active,
                    "users": [
                        {
                            "id": u.id,
                            "name": u.name,
                            "email": u.email,
                            "role": u.role.value,
                            "status": _status(u),
                            "rights": effective_rights(u),
                            "certificate": _certificate(request, session, u),
                        }
                        for u in rows
                    ],
                }
            )
        return {
            "groups": groups,
            "grouped": len(actor.offices) > 1,
        }


async def users_page(request: web.Request) -> web.StreamResponse:
    user_id = require_user(request, level=Level.STRONG)
    data = await asyncio.to_thread(_load_list, request, user_id)
    notice = request.query.get("done")
    return show_firm(
        request,
        "users.html",
        {
            **data,
            "products": product_names(request),
            "notice": notice if notice in _NOTICES else None,
        },
    )


# --- the form (new and edit)


@dataclass(kw_only=True)
class UserForm:
    """What the form shows: the typed values and each field's error (translation key)."""

    name: str = ""
    email: str = ""
    office_id: str = ""
    rights: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def _office_choices(actor: Actor) -> list[dict[str, Any]]:
    return [
        {"id": str(o.id), "label": office_label(o), "rights": sorted(office_rights(o))}
        for o in actor.offices
        if o.active
    ]


def _form_context(
    request: web.Request, form: UserForm, *, actor: Actor, target: User | None
) -> dict[str, Any]:
    # What the office may grant; on the new form, what any of the offices may (the chosen
    # office's bound is checked when the form comes back).
    offices = [target.office] if target is not None else [o for o in actor.offices if o.active]
    allowed = sorted(set().union(*(office_rights(o) for o in offices)))
    return {
        "form": form,
        "products": product_names(request),
        "offices": _office_choices(actor),
        "allowed": allowed,
        "target": None
        if target is None
        else {
            "id": target.id,
            "status": _status(target),
            "role": target.role.value,
            "office": office_label(target.office),
            "self": target.id == actor.user.id,
        },
    }


def _display_name(text: str) -> str:
    return " ".join(text.split())


def _check_name(form: UserForm) -> None:
    if not form.name:
        form.errors["name"] = "firm.error.name_empty"
    elif len(form.name) > NAME_LIMIT:
        form.errors["name"] = "firm.error.name_long"


def _check_email(session: Session, form: UserForm, *, user_id: int | None) -> str | None:
    """The normalised address, or None with the email field's error set."""
    try:
        address = normalise_email(form.email)
    except InvalidEmail:
        form.errors["email"] = "firm.error.email_invalid"
        return None
    other = session.scalar(
        select(User.id).where(func.lower(User.email) == address.lower(), User.id != (user_id or 0))
    )
    if other is not None:
        form.errors["email"] = "firm.error.email_taken"
        return None
    return address


def _read_user_form(form: Mapping[str, Any]) -> UserForm:
    return UserForm(
        name=_display_name(form_text(form, "name", NAME_LIMIT + 64)),
        email=form_text(form, "email", EMAIL_LIMIT).strip(),
        office_id=form_text(form, "office", 24),
    )


class _Invalid(Exception):
    """The form has errors: it is shown again; the transaction rolls back."""

    def __init__(self, context: dict[str, Any]) -> None:
        self.context = context
        super().__init__("invalid form")


def _render_form(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    return show_firm(request, template, context, status=status)


async def user_new_page(request: web.Request) -> web.StreamResponse:
    user_id = require_fresh(request, level=Level.STRONG, back=f"{USERS}/new")

    def load() -> dict[str, Any]:
        with transaction(factory(request)) as session:
            actor = load_actor(session, user_id)
            form = UserForm(office_id=str(actor.user.office_id))
            return _form_context(request, form, actor=actor, target=None)

    return _render_form(request, "user_new.html", await asyncio.to_thread(load))


async def user_new_submit(request: web.Request) -> web.StreamResponse:
    checked = await firm_post(request, base=USERS, id_key=None)
    posted, user_id = checked.form, checked.user_id
    language = page_language(request)
    now = checked.now
    address_of = checked.client
    link_base = activation_link_base(request.app[SETTINGS].public_url)
    c = ctx(request)

    def run() -> None:
        with transaction(factory(request)) as session:
            mark = audit_mark(session)
            actor = load_actor(session, user_id)
            form = _read_user_form(posted)
            try:
                office = authorise_office(session, actor.user, parse_id(form.office_id))
            except NotPermitted:
                refuse()
            form.rights, rights_ok = checked_rights(posted, sorted(office_rights(office)))
            _check_name(form)
            address = _check_email(session, form, user_id=None)
            if not office.active:  # an inactive office's users cannot log in
                form.errors["office"] = "firm.error.office_inactive"
            if not rights_ok:
                form.errors["rights"] = "firm.error.rights"
            if form.errors:
                raise _Invalid(_form_context(request, form, actor=actor, target=None))
            assert address is not None
            try:
                user = create_user(
                    session,
                    broker_number=actor.user.organisation.broker_number,
                    email=address,
                    name=form.name,
                    now=now,
                    actor=f"user:{user_id}",
                    locale=language,  # the head user's page language (issue 13)
                    status=UserStatus.PENDING,
                    office=office,
                    rights=form.rights,
                    firms=firms(request),
                )
            except (DuplicateUser, InvalidEmail):
                form.errors["email"] = "firm.error.email_taken"
                raise _Invalid(_form_context(request, form, actor=actor, target=None)) from None
            except (UnknownRight, RightNotInOffice):
                form.errors["rights"] = "firm.error.rights"
                raise _Invalid(_form_context(request, form, actor=actor, target=None)) from None
            except InvalidUserData:
                form.errors["name"] = "firm.error.name_empty"
                raise _Invalid(_form_context(request, form, actor=actor, target=None)) from None
            send_activation(
                session,
                user_id=user.id,
                link_base=link_base,
                settings=c.settings,
                mail_sealer=c.outbox_sealer,
                actor=f"user:{user_id}",
                now=now,
                language=language,
            )
            stamp_client(session, mark, f"user:{user_id}", address_of)

    try:
        await asyncio.to_thread(run)
    except _Invalid as invalid:
        return _render_form(request, "user_new.html", invalid.context, status=400)
    return see_other(f"{USERS}?done=created")


def _target(session: Session, actor: Actor, target_id: int) -> User:
    try:
        return authorise_user(session, actor.user, target_id)
    except NotPermitted:
        refuse()


async def user_edit_page(
    request: web.Request, *, error: str | None = None, status: int = 200
) -> web.StreamResponse:
    target_id = parse_id(request.match_info["user_id"])
    user_id = require_fresh(request, level=Level.STRONG, back=f"{USERS}/{target_id}")

    def load() -> dict[str, Any]:
        with transaction(factory(request)) as session:
            actor = load_actor(session, user_id)
            target = _target(session, actor, target_id)
            form = UserForm(name=target.name, email=target.email, rights=sorted(target.rights))
            return _form_context(request, form, actor=actor, target=target)

    context = await asyncio.to_thread(load)
    context["error"] = error
    return _render_form(request, "user_edit.html", context, status=status)


async def user_edit_submit(request: web.Request) -> web.StreamResponse:
    checked = await firm_post(request, base=USERS, id_key="user_id")
    posted, user_id = checked.form, checked.user_id
    target_id = checked.id
    now = checked.now
    address_of = checked.client
    public_url = request.app[SETTINGS].public_url.rstrip("/")
    c = ctx(request)

    def run() -> str:
        with transaction(factory(request)) as session:
            mark = audit_mark(session)
            actor = load_actor(session, user_id)
            target = _target(session, actor, target_id)
            form = _read_user_form(posted)
            form.rights, rights_ok = checked_rights(posted, sorted(office_rights(target.office)))
            _check_name(form)
            address = _check_email(session, form, user_id=target.id)
            if not rights_ok:
                form.errors["rights"] = "firm.error.rights"
            if form.errors:
                raise _Invalid(_form_context(request, form, actor=actor, target=target))
            done = "saved"
            if form.name != target.name:
                record_audit(
                    session,
                    actor=f"user:{user_id}",
                    action="user.name",
                    now=now,
                    user_id=target.id,
                    client_addr=address_of,
                )
                target.name = form.name
            if form.rights != sorted(target.rights):
                set_user_rights(
                    session,
                    target,
                    form.rights,
                    firms=firms(request),
                    now=now,
                    actor=f"user:{user_id}",
                )
            if address is not None and address != target.email:
                # The email is the login: the same rules as the user's own change (a link to
                # the new address, a notice to the old one); it applies when confirmed.
                try:
                    queue_email_change(
                        session,
                        user_id=target.id,
                        new_email=address,
                        link_base=f"{public_url}{RESERVED_PREFIX}{EMAIL_CHANGE_PATH}/",
                        mail_sealer=c.outbox_sealer,
                        client_addr=address_of,
                        now=now,
                        actor=f"user:{user_id}",
                        requested_by=actor.user.name,
                    )
                except EmailChangeRejected as exc:
                    form.errors["email"] = (
                        "firm.error.email_invalid"
                        if exc.reason == "invalid"
                        else "firm.error.email_taken"
                    )
                    raise _Invalid(
                        _form_context(request, form, actor=actor, target=target)
                    ) from None
                done = "email_sent"
            stamp_client(session, mark, f"user:{user_id}", address_of)
            return done

    try:
        done = await asyncio.to_thread(run)
    except _Invalid as invalid:
        return _render_form(request, "user_edit.html", invalid.context, status=400)
    return see_other(f"{USERS}?done={done}")


async def _change_active(request: web.Request, *, active: bool) -> web.StreamResponse:
    checked = await firm_post(request, base=USERS, id_key="user_id")
    user_id = checked.user_id
    target_id = checked.id
    now = checked.now
    address_of = checked.client
    store = request.app[SESSIONS]

    def run() -> str | None:
        with transaction(factory(request)) as session:
            mark = audit_mark(session)
            actor = load_actor(session, user_id)
            target = _target(session, actor, target_id)
            try:
                set_user_active(
                    session, target, active, now=now, actor=f"user:{user_id}", by=actor.user
                )
            except InvalidUserData:
                return "firm.error.self"  # a head user cannot lock themselves out
            if not active:
                # SECURITY: the sessions end in the same transaction as the deactivation.
                store.end_all_for_user(target.id, now, db=session)
            stamp_client(session, mark, f"user:{user_id}", address_of)
            return None

    problem = await asyncio.to_thread(run)
    if problem is not None:
        return await user_edit_page(request, error=problem, status=400)
    if not active:
        # The certificate check reads the user's status from the per-replica trust cache:
        # refresh it so this replica refuses the certificate at once (others follow at
        # their next refresh, within the revocation refresh interval).
        await asyncio.to_thread(request.app[TRUST].refresh)
    return see_other(f"{USERS}?done={'reactivated' if active else 'deactivated'}")


async def user_deactivate_submit(request: web.Request) -> web.StreamResponse:
    return await _change_active(request, active=False)


async def user_reactivate_submit(request: web.Request) -> web.StreamResponse:
    return await _change_active(request, active=True)


async def user_activation_submit(request: web.Request) -> web.StreamResponse:
    """The activation mail again (seed 003 tip 3), for a not-yet-activated user only."""
    checked = await firm_post(request, base=USERS, id_key="user_id")
    user_id = checked.user_id
    target_id = checked.id
    now = checked.now
    language = page_language(request)
    address_of = checked.client
    link_base = activation_link_base(request.app[SETTINGS].public_url)
    c = ctx(request)

    def run() -> str | None:
        with transaction(factory(request)) as session:
            mark = audit_mark(session)
            actor = load_actor(session, user_id)
            target = _target(session, actor, target_id)
            if target.status != UserStatus.PENDING:
                return "firm.error.not_pending"
            send_activation(
                session,
                user_id=target.id,
                link_base=link_base,
                settings=c.settings,
                mail_sealer=c.outbox_sealer,
                actor=f"user:{user_id}",
                now=now,
                language=language,
            )
            stamp_client(session, mark, f"user:{user_id}", address_of)
            return None

    problem = await asyncio.to_thread(run)
    if problem is not None:
        return await user_edit_page(request, error=problem, status=400)
    return see_other(f"{USERS}?done=activation_sent")
