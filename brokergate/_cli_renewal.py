"""``brokergate renewal``: the background process (reminders, mail delivery, CRLs, clean-up)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
from collections.abc import Callable

from brokergate._cli_ca import authority_for
from brokergate._context import CliContext, MissingSecret
from renewal import MailRenderer, OutboxDelivery, RenewalJobs, run_until_stopped
from store import OUTBOX_PURPOSE, ensure_current


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    renewal = sub.add_parser(
        "renewal", help="the background process: reminders, mail delivery, CRLs, clean-up"
    )
    renewal_sub = renewal.add_subparsers(dest="renewal_command", required=True, metavar="COMMAND")
    run = renewal_sub.add_parser(
        "run",
        help="run the scheduler until SIGTERM/SIGINT (several may run on one PostgreSQL)",
    )
    run.add_argument(
        "--once", action="store_true", help="run every job once, deliver what is due, and exit"
    )
    run.add_argument(
        "--no-crl",
        action="store_true",
        help="do not re-publish CRLs here (then another renewal process must; needs no CA "
        "passphrase)",
    )
    run.set_defaults(handler=_run)


def _jobs(args: argparse.Namespace, ctx: CliContext) -> RenewalJobs:
    ensure_current(ctx.engine)  # a clear error instead of SQL errors on an old schema
    publish: Callable[[], list[int]] | None = None
    supersede: Callable[[], list[str]] | None = None
    if ctx.config.signer.socket_path is not None:
        # A signer runs (issue 12): it alone opens the CA keys and re-publishes the CRLs
        # (every minute, including those a supersession here made stale). This process
        # only marks superseded certificates revoked, with a keyless authority.
        keyless = dataclasses.replace(authority_for(ctx), keyless=True)
        supersede = keyless.supersede_replaced
    elif not args.no_crl:
        if not ctx.config.ca.passphrase:
            raise MissingSecret(
                "ca.passphrase",
                "BROKERGATE_CA__PASSPHRASE (or ca.passphrase_file): the renewal process "
                "re-publishes CRLs before they lapse; or run with --no-crl if another "
                "renewal process does that",
            )
        authority = authority_for(ctx)
        publish = authority.publish_due_crls
        supersede = authority.supersede_replaced
    delivery = OutboxDelivery(
        sessions=ctx.sessions,
        settings=ctx.config.mail,
        renderer=MailRenderer(
            public_url=ctx.config.gateway.public_url, time_zone=ctx.config.renewal.time_zone
        ),
        sealer=ctx.sealer(OUTBOX_PURPOSE),
        clock=ctx.clock,
    )
    return RenewalJobs(
        sessions=ctx.sessions,
        settings=ctx.config.renewal,
        delivery=delivery,
        clock=ctx.clock,
        publish_due_crls=publish,
        supersede_replaced=supersede,
    )


def _run(args: argparse.Namespace, ctx: CliContext) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=ctx.err,
    )
    # Third-party chatter (every APScheduler tick) would drown our own lines.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    jobs = _jobs(args, ctx)
    if args.once:
        asyncio.run(jobs.run_all_once())
        return 0
    asyncio.run(_serve(jobs, ctx))
    return 0


async def _serve(jobs: RenewalJobs, ctx: CliContext) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_until_stopped(jobs, poll_interval=ctx.config.mail.poll_interval, stop=stop)
