"""``brokergate user resend-activation`` and ``brokergate user reset-2fa`` (fallback logins).

The ``user`` group itself belongs to ``_cli_user``; it calls :func:`register_user_commands`
with its sub-parsers so that both modules add to one group.
"""

from __future__ import annotations

import argparse

from brokergate._context import CliContext
from brokergate._output import print_json
from ca import find_user
from gateway.logins import activation_link_base, reset_second_factors, send_activation
from store import OUTBOX_PURPOSE, transaction


def register_user_commands(user_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = user_sub.add_parser(
        "resend-activation",
        help="mail a new activation link (valid 7 days; earlier links stop working)",
    )
    p.add_argument("user", metavar="USER", help="user id or email")
    p.set_defaults(handler=_resend_activation)

    p = user_sub.add_parser(
        "reset-2fa",
        aliases=["reset-totp"],  # its name before issue 14; scripts may still call it
        help="lost second factor: remove a broker's authenticator app, passkeys, recovery "
        "codes and remembered browsers, end their sessions and mail them a notice; audited",
        description="Remove every second factor of USER (authenticator app, passkeys, "
        "recovery codes, remembered browsers) and end all their sessions, in one "
        "transaction; audited as user.second_factors.reset and a notice is mailed to the "
        "user in their language. They then log in with their password (basic) and are "
        "asked to set up a new second factor. Client certificates are not touched "
        "('brokergate cert revoke'). A user without any second factor is left unchanged "
        "(exit 0, 'nothing changed'). 'reset-totp' is the old name of this command.",
    )
    p.add_argument("user", metavar="USER", help="user id or email")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_reset_second_factors)


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


def _reset_second_factors(args: argparse.Namespace, ctx: CliContext) -> int:
    sealer = ctx.sealer(OUTBOX_PURPOSE)  # fails before anything is written
    with transaction(ctx.sessions) as session:
        user = find_user(session, args.user)
        done = reset_second_factors(
            session, user_id=user.id, actor=ctx.actor, mail_sealer=sealer, now=ctx.clock()
        )
    # Printed after the commit: only what really happened is reported.
    if args.json:
        print_json(
            {
                "user_id": done.user_id,
                "email": done.email,
                "changed": done.changed,
                "removed": {
                    "totp": done.totp,
                    "passkeys": done.passkeys,
                    "recovery_codes": done.recovery_codes,
                    "remembered_devices": done.devices,
                },
                "sessions_ended": done.sessions_ended,
                "notice_queued": done.outbox_id is not None,
                "valid_certificates": done.valid_certificates,
            },
            ctx.out,
        )
        return 0
    if not done.changed:
        print(
            f"{done.email} has no second factor (no authenticator app, passkey, recovery code "
            "or remembered browser); nothing changed",
            file=ctx.out,
        )
    else:
        removed = [
            *(["authenticator app"] if done.totp else []),
            *([f"{done.passkeys} passkey(s)"] if done.passkeys else []),
            *([f"{done.recovery_codes} recovery code(s)"] if done.recovery_codes else []),
            *([f"{done.devices} remembered browser(s)"] if done.devices else []),
        ]
        print(
            f"second factors of {done.email} reset: removed {', '.join(removed)}; "
            f"{done.sessions_ended} session(s) ended; notice mail queued. They log in with "
            "their password and are asked to set up a new second factor.",
            file=ctx.out,
        )
    if done.valid_certificates:
        print(
            f"note: {done.valid_certificates} valid certificate(s) still log {done.email} in "
            "without a prompt; if it was lost too: 'brokergate cert revoke SERIAL'",
            file=ctx.out,
        )
    return 0
