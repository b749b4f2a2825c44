"""``brokergate office``: a firm's head office and its sub-offices (issue 13).

An office is named on the command line by ONE reference form, ``BROKER[/NUMBER]``:

* ``60/123/4567``      the firm's head office (its number is the broker number);
* ``60/123/4567/AMS``  the firm's sub-office with the number ``AMS`` (the firm's own number,
  unique within the firm; everything after the broker number is the office number).

Deactivating an office ends its users' sessions in the same transaction (and for a head
office its sub-offices' users' too): they are logged out on every gateway replica within the
session refresh interval.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from brokergate._context import CliContext
from brokergate._output import format_time, print_json, print_table
from ca import (
    CAError,
    UnknownOffice,
    create_sub_office,
    delete_office,
    head_office_of,
    set_office_active,
    update_office,
    validate_broker_number,
)
from gateway import Sessions
from store import Office, Organisation, User, UserRole, transaction

OFFICE_REF = "BROKER[/NUMBER]"
_REF = re.compile(r"^\s*(\d{2}/\d{3}/\d{4})(?:/(.+?))?\s*$")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    office = sub.add_parser(
        "office", help="a firm's head office and sub-offices: add, list, show, ..."
    )
    office_sub = office.add_subparsers(dest="office_command", required=True, metavar="COMMAND")

    p = office_sub.add_parser(
        "add",
        help="add a sub-office under a firm (the firm and its head office come with its first "
        "user: 'user add' or 'import firms')",
    )
    p.add_argument(
        "--broker", required=True, metavar="NN/NNN/NNNN", help="the firm's broker number"
    )
    p.add_argument(
        "--number", required=True, help="the sub-office's number, unique within the firm"
    )
    p.add_argument("--name", required=True, help="the sub-office's name")
    p.add_argument(
        "--email", required=True, help="the sub-office's email address (unique; quotes go there)"
    )
    _contact_options(p)
    p.add_argument(
        "--rights",
        metavar="KEYS",
        help="products the office may use, comma-separated (e.g. DIP,DIL); at most the head "
        "office's; '' = none (default: all the head office's)",
    )
    p.set_defaults(handler=_add)

    p = office_sub.add_parser("list", help="list offices (head office first, then sub-offices)")
    p.add_argument("--broker", metavar="NN/NNN/NNNN", help="only this firm's offices")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_list)

    p = office_sub.add_parser("show", help="show one office and its users")
    _ref_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_show)

    p = office_sub.add_parser(
        "update",
        help="change an office's details or rights (only the options given change; an empty "
        "value clears an optional field)",
    )
    _ref_argument(p)
    p.add_argument("--name", help="new name")
    p.add_argument("--email", help="new email address (unique)")
    p.add_argument("--number", help="new number (sub-offices only; unique within the firm)")
    _contact_options(p)
    p.add_argument(
        "--rights",
        metavar="KEYS",
        help="the office's products, comma-separated; rights taken away are also taken from "
        "its users ('' = none)",
    )
    p.set_defaults(handler=_update)

    p = office_sub.add_parser(
        "deactivate",
        help="no user of the office can log in any more; ends their sessions now (a head "
        "office: its sub-offices' users too)",
    )
    _ref_argument(p)
    p.set_defaults(handler=_deactivate)

    p = office_sub.add_parser("reactivate", help="let the office's users log in again")
    _ref_argument(p)
    p.set_defaults(handler=_reactivate)

    p = office_sub.add_parser(
        "delete",
        help="delete a sub-office and its users (only while none of them has ever logged in; "
        "otherwise deactivate it)",
    )
    _ref_argument(p)
    p.set_defaults(handler=_delete)


def _ref_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "office",
        metavar="OFFICE",
        help="BROKER for the head office (60/123/4567), BROKER/NUMBER for a sub-office "
        "(60/123/4567/AMS)",
    )


def _contact_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="street and house number")
    p.add_argument("--postcode", help="postcode")
    p.add_argument("--city", help="city")
    p.add_argument("--phone", help="telephone number")


def split_keys(text: str) -> list[str]:
    """Product keys as typed: separated by commas, semicolons or spaces; '' = none. The
    catalogue check (ca.validate_rights) comes after."""
    return [key for key in re.split(r"[,;\s]+", text.strip().upper()) if key]


class BadOfficeReference(CAError):
    """An office named in another form than ``BROKER[/NUMBER]``."""

    def __init__(self, ref: str) -> None:
        super().__init__(
            f"{ref!r} is not an office reference; write {OFFICE_REF}, e.g. 60/123/4567 for the "
            "head office or 60/123/4567/AMS for its sub-office AMS"
        )


def find_office(session: Session, ref: str) -> Office:
    """The office named by ``BROKER[/NUMBER]``.

    Raises:
        BadOfficeReference: ``ref`` is not of that form.
        UnknownOffice: no such firm, or the firm has no such office.
    """
    match = _REF.fullmatch(ref)
    if match is None:
        raise BadOfficeReference(ref)
    broker, number = match.group(1), match.group(2)
    org = session.scalar(select(Organisation).where(Organisation.broker_number == broker))
    if org is None:
        raise UnknownOffice(broker)
    if number is None or number.strip() == broker:
        return head_office_of(session, org.id)
    office = session.scalar(
        select(Office).where(Office.organisation_id == org.id, Office.number == number.strip())
    )
    if office is None:
        raise UnknownOffice(f"{broker}/{number.strip()}")
    return office


def office_ref(office: Office) -> str:
    """``office``'s reference in the one form the commands take."""
    broker = office.organisation.broker_number
    return broker if office.head_office_id is None else f"{broker}/{office.number}"


def office_summary(session: Session, office: Office) -> dict[str, object]:
    users = session.scalar(select(func.count(User.id)).where(User.office_id == office.id))
    return {
        "id": office.id,
        "ref": office_ref(office),
        "broker_number": office.organisation.broker_number,
        "number": office.number,
        "kind": "head office" if office.head_office_id is None else "sub-office",
        "name": office.name,
        "email": office.email,
        "address": office.address,
        "postcode": office.postcode,
        "city": office.city,
        "phone": office.phone,
        "rights": list(office.rights),
        "active": office.active,
        "users": users or 0,
        "created_at": office.created_at,
        "deactivated_at": office.deactivated_at,
    }


def _add(args: argparse.Namespace, ctx: CliContext) -> int:
    with transaction(ctx.sessions) as session:
        head = find_office(session, validate_broker_number(args.broker))
        office = create_sub_office(
            session,
            head_office=head,
            number=args.number,
            name=args.name,
            email=args.email,
            address=args.address or None,
            postcode=args.postcode or None,
            city=args.city or None,
            phone=args.phone or None,
            rights=head.rights if args.rights is None else split_keys(args.rights),
            firms=ctx.config.firms,
            now=ctx.clock(),
            actor=ctx.actor,
        )
        ref, name, rights = office_ref(office), office.name, list(office.rights)
    print(
        f"added sub-office {ref}: {name}, rights {','.join(rights) or 'none'}; its users: "
        f"'brokergate user add --broker {args.broker} --office {args.number} ...'",
        file=ctx.out,
    )
    return 0


def _list(args: argparse.Namespace, ctx: CliContext) -> int:
    query = select(Office).join(Organisation, Office.organisation_id == Organisation.id)
    with transaction(ctx.sessions) as session:
        if args.broker:
            firm = find_office(session, validate_broker_number(args.broker))
            query = query.where(Office.organisation_id == firm.organisation_id)
        offices = session.scalars(
            query.order_by(
                Organisation.broker_number, Office.head_office_id.is_not(None), Office.number
            )
        ).all()
        rows = [office_summary(session, o) for o in offices]
    if args.json:
        print_json(rows, ctx.out)
        return 0
    print_table(
        [
            (
                r["ref"],
                r["name"],
                r["email"],
                ",".join(r["rights"]) or "-",  # type: ignore[arg-type]
                "active" if r["active"] else "inactive",
                r["users"],
            )
            for r in rows
        ],
        ["OFFICE", "NAME", "EMAIL", "RIGHTS", "STATUS", "USERS"],
        ctx.out,
    )
    return 0


def _show(args: argparse.Namespace, ctx: CliContext) -> int:
    with transaction(ctx.sessions) as session:
        office = find_office(session, args.office)
        summary = office_summary(session, office)
        users = [
            {
                "id": u.id,
                "email": u.email,
                "name": u.name,
                "role": u.role.value,
                "status": u.status.value,
                "rights": list(u.rights),
            }
            for u in sorted(
                session.scalars(select(User).where(User.office_id == office.id)),
                key=lambda u: (u.role != UserRole.HEAD, u.name),  # head users first
            )
        ]
    if args.json:
        print_json({**summary, "user_list": users}, ctx.out)
        return 0
    for key, value in summary.items():
        if isinstance(value, datetime):
            value = format_time(value)
        elif isinstance(value, list):
            value = ",".join(value) or "none"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        print(f"{key + ':':<16}{'-' if value is None else value}", file=ctx.out)
    for u in users:
        rights = ",".join(u["rights"]) or "none"  # type: ignore[arg-type]
        print(
            f"  {u['id']:>6}  {u['role']:<8}  {u['status']:<8}  {rights:<12}  {u['name']} "
            f"<{u['email']}>",
            file=ctx.out,
        )
    return 0


def _update(args: argparse.Namespace, ctx: CliContext) -> int:
    changes: dict[str, Any] = {}  # only what was given: update_office keeps the rest
    for field in ("name", "email", "number"):
        if getattr(args, field) is not None:
            changes[field] = getattr(args, field)
    for field in ("address", "postcode", "city", "phone"):
        value = getattr(args, field)
        if value is not None:
            changes[field] = value.strip() or None
    if args.rights is not None:
        changes["rights"] = split_keys(args.rights)
    if not changes:
        print(
            "brokergate: office update: nothing to change; give at least one of --name, "
            "--email, --number, --address, --postcode, --city, --phone, --rights",
            file=ctx.err,
        )
        return 2
    with transaction(ctx.sessions) as session:
        office = find_office(session, args.office)
        update_office(
            session, office, firms=ctx.config.firms, now=ctx.clock(), actor=ctx.actor, **changes
        )
        ref = office_ref(office)
    print(f"updated office {ref}: {', '.join(sorted(changes))}", file=ctx.out)
    return 0


def _set_active(args: argparse.Namespace, ctx: CliContext, active: bool) -> int:
    sessions = Sessions(factory=ctx.sessions, settings=ctx.config.gateway)
    now = ctx.clock()
    with transaction(ctx.sessions) as session:
        office = find_office(session, args.office)
        was = office.active
        user_ids = set_office_active(session, office, active, now=now, actor=ctx.actor)
        # The same transaction: the office is inactive exactly when its sessions have ended.
        ended = sum(sessions.end_all_for_user(uid, now, db=session) for uid in user_ids)
        ref = office_ref(office)
    if was == active:
        print(f"office {ref} was already {'active' if active else 'inactive'}", file=ctx.out)
    elif active:
        print(f"office {ref} reactivated; its users can log in again", file=ctx.out)
    else:
        print(
            f"office {ref} deactivated; {len(user_ids)} user(s) can no longer log in, "
            f"{ended} session(s) ended",
            file=ctx.out,
        )
    return 0


def _deactivate(args: argparse.Namespace, ctx: CliContext) -> int:
    return _set_active(args, ctx, False)


def _reactivate(args: argparse.Namespace, ctx: CliContext) -> int:
    return _set_active(args, ctx, True)


def _delete(args: argparse.Namespace, ctx: CliContext) -> int:
    with transaction(ctx.sessions) as session:
        office = find_office(session, args.office)
        ref, users = office_ref(office), office_summary(session, office)["users"]
        delete_office(session, office, now=ctx.clock(), actor=ctx.actor)
    print(f"office {ref} deleted, with its {users} user(s)", file=ctx.out)
    return 0
