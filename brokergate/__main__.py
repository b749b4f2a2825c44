"""The ``brokergate`` console script: parses arguments and calls into the packages.

Exit codes: 0 success, 1 the action failed (the message says why; nothing was
changed), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from brokergate import (
    _cli_ca,
    _cli_cert,
    _cli_config,
    _cli_db,
    _cli_gateway,
    _cli_mail,
    _cli_renewal,
    _cli_user,
)
from brokergate._config import ConfigError, load_config
from brokergate._context import CliContext, MissingSecret
from brokergate._errors import DOMAIN_ERRORS

# Each module adds one sub-command tree; its handlers receive (args, CliContext).
COMMAND_MODULES: tuple[ModuleType, ...] = (
    _cli_ca,
    _cli_user,
    _cli_cert,
    _cli_config,
    _cli_db,
    _cli_gateway,
    _cli_mail,
    _cli_renewal,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brokergate",
        description="Client-certificate CA, mTLS gateway and renewal reminders for a broker "
        "portal.",
        epilog="Secrets (CA passphrase, SMTP password, secret key) come from the environment or "
        "files named in the config, never from arguments. See docs/configuration.md.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML configuration file (default: $BROKERGATE_CONFIG, else ./brokergate.toml, "
        "else built-in defaults)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"brokergate: {exc}", file=sys.stderr)
        return 2
    ctx = CliContext(config=config)
    try:
        code: int = args.handler(args, ctx)
        return code
    except MissingSecret as exc:
        print(f"brokergate: {exc}", file=sys.stderr)
        return 2
    except DOMAIN_ERRORS as exc:
        print(f"brokergate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("brokergate: interrupted", file=sys.stderr)
        return 130
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
