"""``brokergate dev run``: everything locally (``make run``); see brokergate/_dev/."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from brokergate._config import ConfigError
from brokergate._context import CliContext
from brokergate._dev import (
    DEMO_BROKER,
    BootstrapReport,
    DevError,
    DevLayout,
    DevPorts,
    ReceivedMail,
    Supervisor,
    bootstrap,
    welcome_lines,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = sub.add_parser("dev", help="development: run the whole system locally")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="COMMAND")
    defaults = DevPorts()
    run = dev_sub.add_parser(
        "run",
        help="dev CA, demo broker, demo upstream, mail sink, gateway and renewal (Ctrl-C stops)",
        description="Run brokergate on embedded defaults (ignoring brokergate.toml and "
        "BROKERGATE_* variables): SQLite and secrets under data/, certificates under "
        "certs-dev/, everything on loopback. The first start creates what is missing; later "
        "starts reuse it. Delete data/ and certs-dev/ (make clean) to start afresh. The "
        "generated data/brokergate-dev.toml is rewritten on every start; your own settings go "
        "into an overlay (dev-overlay.toml in the project folder, or --overlay FILE), merged "
        "over it on every start and never written.",
    )
    run.add_argument(
        "--overlay",
        type=Path,
        metavar="FILE",
        help="TOML with your own settings (routes, levels, timeouts ...) laid over the "
        "generated configuration (default: DIR/dev-overlay.toml if it exists)",
    )
    run.add_argument(
        "--gateway-port",
        type=int,
        default=defaults.gateway,
        metavar="PORT",
        help=f"the gateway's HTTPS port on localhost (default {defaults.gateway})",
    )
    run.add_argument(
        "--upstream-port",
        type=int,
        default=defaults.upstream,
        metavar="PORT",
        help=f"the demo upstream's HTTP port on 127.0.0.1 (default {defaults.upstream})",
    )
    run.add_argument(
        "--smtp-port",
        type=int,
        default=defaults.smtp,
        metavar="PORT",
        help=f"the mail sink's SMTP port on 127.0.0.1 (default {defaults.smtp})",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=defaults.metrics,
        metavar="PORT",
        help=f"the gateway's /metrics listener (0: off; default {defaults.metrics})",
    )
    run.add_argument(
        "--dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="project folder that holds data/ and certs-dev/ (default: the current one)",
    )
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace, ctx: CliContext) -> int:
    try:
        ports = DevPorts(
            gateway=args.gateway_port,
            upstream=args.upstream_port,
            smtp=args.smtp_port,
            metrics=args.metrics_port,
        )
    except ValueError as exc:
        print(f"brokergate: {exc}", file=ctx.err)
        return 2
    layout = DevLayout.at(args.dir)
    print(f"[dev] preparing {layout.root} (data/, certs-dev/) ...", file=ctx.out, flush=True)
    try:
        report = bootstrap(layout, ports, clock=ctx.clock, overlay=args.overlay)
    except ConfigError as exc:
        print(f"brokergate: {exc}", file=ctx.err)
        return 2
    except DevError as exc:
        print(f"brokergate: {exc}", file=ctx.err)
        return 1

    def on_ready() -> None:
        for line in welcome_lines(layout, ports, report):
            print(f"[dev] {line}", file=ctx.out)
        ctx.out.flush()

    supervisor = Supervisor(
        layout=layout,
        ports=ports,
        clock=ctx.clock,
        out=ctx.out,
        on_ready=on_ready,
        on_mail=lambda mail: _note_password_mail(mail, layout, report, supervisor),
    )
    return asyncio.run(supervisor.run())


def _note_password_mail(
    mail: ReceivedMail, layout: DevLayout, report: BootstrapReport, supervisor: Supervisor
) -> None:
    """Remember which .eml holds the demo broker's password (shown on later starts too)."""
    serial = report.state.demo_serial
    if serial is None or DEMO_BROKER.email not in mail.to:
        return
    if serial.lower() not in mail.text.lower().replace(":", ""):
        return
    report.state.password_mail = layout.relative(mail.path)
    report.state.save(layout.state_file)
    supervisor.say(f"the demo broker's password mail is {report.state.password_mail}")
