"""``brokergate user rights|deactivate|reactivate``: a user's place in their firm (issue 13).

The ``user`` group belongs to ``_cli_user``; it calls :func:`register_firm_user_commands`
with its sub-parsers. Deactivation ends the user's sessions in the same transaction.
"""

from __future__ import annotations

import argparse

from brokergate._cli_office import split_keys
from brokergate._context import CliContext
from ca import effective_rights, find_user, set_user_active, set_user_rights
from gateway import Sessions
from store import transaction


def register_firm_user_commands(
    user_sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    p = user_sub.add_parser(
        "rights",
        help="set a user's product rights (replaces them; at most their office's rights)",
    )
    p.add_argument("user", metavar="USER", help="user id or email")
    p.add_argument(
        "rights", metavar="KEYS", help="products, comma-separated (e.g. DIP,DIL); '' = none"
    )
    p.set_defaults(handler=_rights)

    p = user_sub.add_parser(
        "deactivate", help="the user can no longer log in by any method; ends their sessions now"
    )
    p.add_argument("user", metavar="USER", help="user id or email")
    p.set_defaults(handler=_deactivate)

    p = user_sub.add_parser(
        "reactivate",
        help="let a deactivated user log in again (one who never activated gets 'pending' and "
        "needs 'user resend-activation')",
    )
    p.add_argument("user", metavar="USER", help="user id or email")
    p.set_defaults(handler=_reactivate)


def _rights(args: argparse.Namespace, ctx: CliContext) -> int:
    with transaction(ctx.sessions) as session:
        user = find_user(session, args.user)
        set_user_rights(
            session,
            user,
            split_keys(args.rights),
            firms=ctx.config.firms,
            now=ctx.clock(),
            actor=ctx.actor,
        )
        email, rights, effective = user.email, list(user.rights), effective_rights(user)
    print(f"rights of {email}: {','.join(rights) or 'none'}", file=ctx.out)
    held_back = sorted(set(rights) - effective)
    if held_back:  # e.g. a head office that lost the right after the sub-office got it
        print(
            f"note: {','.join(held_back)} not usable now: the office (or its head office) "
            "does not have it",
            file=ctx.out,
        )
    return 0


def _set_active(args: argparse.Namespace, ctx: CliContext, active: bool) -> int:
    sessions = Sessions(factory=ctx.sessions, settings=ctx.config.gateway)
    now = ctx.clock()
    with transaction(ctx.sessions) as session:
        user = find_user(session, args.user)
        changed = set_user_active(session, user, active, now=now, actor=ctx.actor)
        # The same transaction: the user is disabled exactly when their sessions have ended.
        ended = 0 if active else sessions.end_all_for_user(user.id, now, db=session)
        email, status = user.email, user.status.value
    if not changed:
        print(f"{email} is already {status}; nothing changed", file=ctx.out)
    elif active:
        print(f"{email} reactivated (status {status})", file=ctx.out)
        if status == "pending":
            print(
                f"{email} never activated the account: 'brokergate user resend-activation "
                f"{email}' mails a link",
                file=ctx.out,
            )
    else:
        print(f"{email} deactivated; {ended} session(s) ended", file=ctx.out)
    return 0


def _deactivate(args: argparse.Namespace, ctx: CliContext) -> int:
    return _set_active(args, ctx, False)


def _reactivate(args: argparse.Namespace, ctx: CliContext) -> int:
    return _set_active(args, ctx, True)
