"""``brokergate user resend-activation`` and ``brokergate user reset-totp`` (fallback logins).

The ``user`` group itself belongs to ``_cli_user``; it calls :func:`register_user_commands`
with its sub-parsers so that both modules add to one group.
"""

from __future__ import annotations

import argparse

from brokergate._context import CliContext
from ca import find_user
from gateway.logins import activation_link_base, reset_totp, send_activation
from store import OUTBOX_PURPOSE, transaction


def register_user_commands(user_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = user_sub.add_parser(
        "resend-activation",
        help="mail a new activation link (valid 7 days; earlier links stop working)",
    )
    p.add_argument("user", metavar="USER", help="user id or email")
    p.set_defaults(handler=_resend_activation)

    p = user_sub.add_parser(
        "reset-totp",
        help="remove a broker's authenticator app and recovery codes (lost phone); audited",
    )
    p.add_argument("user", metavar="USER", help="user id or email")
    p.set_defaults(handler=_reset_totp)


def _resend_activation(args: argparse.Namespace, ctx: CliContext) -> int:
    sealer = ctx.sealer(OUTBOX_PURPOSE)
    with transaction(ctx.sessions) as session:
        user = find_user(session, args.user)
        sent = send_activation(
            session,
            user_id=user.id,
            link_base=activation_link_base(ctx.config.gateway.public_url),
            settings=ctx.config.logins,
            mail_sealer=sealer,
            actor=ctx.actor,
            now=ctx.clock(),
        )
    print(
        f"activation link queued for {sent.email} (valid until {sent.expires_at:%Y-%m-%d %H:%M} "
        "UTC); earlier links no longer work",
        file=ctx.out,
    )
    return 0


def _reset_totp(args: argparse.Namespace, ctx: CliContext) -> int:
    with transaction(ctx.sessions) as session:
        user = find_user(session, args.user)
        had = reset_totp(session, user_id=user.id, actor=ctx.actor, now=ctx.clock())
        email = user.email
    if had:
        print(
            f"TOTP and recovery codes of {email} removed; they log in with password only "
            "until they set up an authenticator app again",
            file=ctx.out,
        )
    else:
        print(f"{email} had no authenticator app; nothing changed", file=ctx.out)
    return 0
