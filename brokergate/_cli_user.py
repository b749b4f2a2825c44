"""``brokergate user``: add, list and show brokers; their office, role and rights."""

from __future__ import annotations

import argparse
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from brokergate._cli_logins import register_user_commands
from brokergate._cli_office import find_office, office_ref, split_keys
from brokergate._cli_user_firm import register_firm_user_commands
from brokergate._context import CliContext
from brokergate._output import format_time, print_json, print_table
from ca import LOCALES, create_user, effective_rights, find_user, validate_broker_number
from gateway.logins import activation_link_base, send_activation
from store import OUTBOX_PURPOSE, Certificate, User, UserRole, transaction


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = sub.add_parser("user", help="brokers: add, list, show")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="COMMAND")

    p = user_sub.add_parser("add", help="add a broker (validated; duplicates refused)")
    p.add_argument("--broker", required=True, metavar="NN/NNN/NNNN", help="broker number")
    p.add_argument("--email", required=True, help="the broker's email address (unique)")
    p.add_argument("--name", required=True, help="full name, as shown in the certificate")
    p.add_argument("--locale", default="de", choices=LOCALES, help="language of mails and pages")
    p.add_argument(
        "--office",
        metavar="NUMBER",
        help="the firm's sub-office the user belongs to (default: the head office; "
        "'brokergate office list --broker NN/NNN/NNNN')",
    )
    p.add_argument(
        "--role",
        choices=[r.value for r in UserRole],
        help="head = administers the office, employee = does not (default: head for the "
        "office's first user, else employee)",
    )
    p.add_argument(
        "--rights",
        metavar="KEYS",
        help="products, comma-separated (e.g. DIP,DIL); at most the office's; '' = none "
        "(default: all the office's)",
    )
    p.add_argument(
        "--no-activation",
        action="store_true",
        help="do not mail the activation link that lets the broker set a password "
        "(certificate or TAN login only; 'user resend-activation' sends one later)",
    )
    p.set_defaults(handler=_add)

    p = user_sub.add_parser("list", help="list users")
    p.add_argument(
        "--office",
        metavar="BROKER[/NUMBER]",
        help="only this office's users (60/123/4567: the head office; 60/123/4567/AMS)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_list)

    p = user_sub.add_parser("show", help="show one user and their certificates")
    p.add_argument("user", metavar="USER", help="user id or email")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_show)

    register_user_commands(user_sub)  # resend-activation, reset-2fa (fallback logins)
    register_firm_user_commands(user_sub)  # rights, deactivate, reactivate (firms)


def _add(args: argparse.Namespace, ctx: CliContext) -> int:
    # Fail on a missing secret key before anything is written.
    sealer = None if args.no_activation else ctx.sealer(OUTBOX_PURPOSE)
    with transaction(ctx.sessions) as session:
        office = None
        if args.office is not None:
            office = find_office(session, f"{validate_broker_number(args.broker)}/{args.office}")
        user = create_user(
            session,
            broker_number=args.broker,
            email=args.email,
            name=args.name,
            locale=args.locale,
            role=None if args.role is None else UserRole(args.role),
            office=office,
            rights=None if args.rights is None else split_keys(args.rights),
            firms=ctx.config.firms,
            now=ctx.clock(),
            actor=ctx.actor,
        )
        sent = None
        if sealer is not None:
            sent = send_activation(
                session,
                user_id=user.id,
                link_base=activation_link_base(ctx.config.gateway.public_url),
                settings=ctx.config.logins,
                mail_sealer=sealer,
                actor=ctx.actor,
                now=ctx.clock(),
            )
        user_id, name, email = user.id, user.name, user.email
        where, role = office_ref(user.office), user.role.value
        rights = ",".join(user.rights) or "none"
    # Printed after the commit: only what really happened is reported.
    print(
        f"added user {user_id}: {name} <{email}>, office {where}, {role}, rights {rights}",
        file=ctx.out,
    )
    if sent is not None:
        print(
            f"activation link queued for {email} (valid until {sent.expires_at:%Y-%m-%d %H:%M} "
            "UTC; 'brokergate mail pending')",
            file=ctx.out,
        )
    return 0


def user_summary(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "broker_number": user.organisation.broker_number,
        "office": office_ref(user.office),
        "office_name": user.office.name,
        "locale": user.locale,
        "role": user.role.value,
        "rights": list(user.rights),
        "effective_rights": sorted(effective_rights(user)),
        "status": user.status.value,
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
        "last_login_method": user.last_login_method,
    }


def _list(args: argparse.Namespace, ctx: CliContext) -> int:
    with transaction(ctx.sessions) as session:
        query = select(User).order_by(User.id)
        if args.office:
            query = query.where(User.office_id == find_office(session, args.office).id)
        users = [user_summary(u) for u in session.scalars(query)]
    if args.json:
        print_json(users, ctx.out)
        return 0
    print_table(
        [
            (
                u["id"],
                u["office"],
                u["email"],
                u["name"],
                u["role"],
                ",".join(u["rights"]) or "-",  # type: ignore[arg-type]
                u["status"],
            )
            for u in users
        ],
        ["ID", "OFFICE", "EMAIL", "NAME", "ROLE", "RIGHTS", "STATUS"],
        ctx.out,
    )
    return 0


def _certificates_of(session: Session, user_id: int) -> list[Certificate]:
    return list(
        session.scalars(
            select(Certificate).where(Certificate.user_id == user_id).order_by(Certificate.id)
        )
    )


def _show(args: argparse.Namespace, ctx: CliContext) -> int:
    with transaction(ctx.sessions) as session:
        user = find_user(session, args.user)
        summary = user_summary(user)
        certs = [
            {
                "serial": c.serial,
                "status": c.status.value,
                "not_after": c.not_after,
                "generation": c.generation_id,
            }
            for c in _certificates_of(session, user.id)
        ]
    if args.json:
        print_json({**summary, "certificates": certs}, ctx.out)
        return 0
    for key, value in summary.items():
        if isinstance(value, datetime):
            shown: object = format_time(value)
        elif isinstance(value, list):
            shown = ",".join(value) or "none"
        else:
            shown = value
        print(f"{key + ':':<19}{'-' if shown is None else shown}", file=ctx.out)
    print(f"{'certificates:':<19}{len(certs) or 'none'}", file=ctx.out)
    for c in certs:
        print(f"  {c['serial']}  {c['status']:<8} until {c['not_after']:%Y-%m-%d}", file=ctx.out)
    return 0
