"""The ``brokergate`` console script: parses arguments and calls into the packages.

Exit codes: 0 success, 1 the action failed (the message says why; nothing was
changed), 2 bad usage or configuration.

Every error is one line on stderr that says what to do; a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from sqlalchemy.exc import SQLAlchemyError

from brokergate import (
    _cli_ca,
    _cli_cert,
    _cli_config,
    _cli_db,
    _cli_dev,
    _cli_gateway,
    _cli_import,
    _cli_mail,
    _cli_office,
    _cli_reference,
    _cli_renewal,
    _cli_user,
)
from brokergate._config import ConfigError, load_config
from brokergate._context import CliContext, MissingSecret, StoreUnusable, secret_hint
from brokergate._errors import DOMAIN_ERRORS

# Each module adds one sub-command tree; its handlers receive (args, CliContext).
COMMAND_MODULES: tuple[ModuleType, ...] = (
    _cli_ca,
    _cli_user,
    _cli_office,
    _cli_import,
    _cli_cert,
    _cli_config,
    _cli_db,
    _cli_gateway,
    _cli_mail,
    _cli_renewal,
    _cli_dev,
    _cli_reference,  # last: it prints the help of everything above
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
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of an error (for a bug report)",
    )
    # The whole tree, for `help-reference` (which cannot import this module: a circle).
    parser.set_defaults(root_parser=parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    _name_sub_commands(sub)
    return parser


def _name_sub_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Each command's line in the top-level --help ends with all of its sub-commands, taken
    from the parser itself, so the list cannot fall behind the code (it did: 'user' said
    "add, list, show" when it had five)."""
    for action in sub._choices_actions:
        child = sub.choices[action.dest]
        names = [  # canonical names only: an alias (user reset-totp) is not another command
            choice.dest
            for child_action in child._actions
            if isinstance(child_action, argparse._SubParsersAction)
            for choice in child_action._choices_actions
        ]
        if names:
            topic = (action.help or "").split(":")[0]
            action.help = f"{topic}: {', '.join(names)}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (`brokergate cert list | head`): not an error worth a
        # traceback. Point stdout at /dev/null so the interpreter's final flush is quiet too
        # (the recipe of the Python docs, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(args, exc, 2)
    ctx = CliContext(
        config=config,
        create_store=getattr(args, "creates_store", False),
        schema_any=getattr(args, "schema_any", False),
    )
    try:
        code: int = args.handler(args, ctx)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at exit
        return code
    except MissingSecret as exc:
        return _fail(args, exc, 2, hint=secret_hint(config))
    except StoreUnusable as exc:
        return _fail(args, exc, 2)
    except DOMAIN_ERRORS as exc:
        return _fail(args, exc, 1)
    except SQLAlchemyError as exc:
        url = ctx.store_url_for_messages
        problem = (str(getattr(exc, "orig", None) or exc).splitlines() or ["?"])[0]
        return _fail(
            args,
            exc,
            1,
            text=f"cannot connect to or use the database {url}: {problem} (check store.url, "
            "and that the server is running; --debug shows the details)",
        )
    except KeyboardInterrupt:
        print("brokergate: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:  # a bug: still one line, the traceback on request
        return _fail(
            args,
            exc,
            1,
            text=f"unexpected error: {type(exc).__name__}: {exc} (run again with --debug for "
            "the traceback, and report it)",
        )
    finally:
        ctx.close()


def _fail(
    args: argparse.Namespace,
    exc: BaseException,
    code: int,
    *,
    text: str | None = None,
    hint: str = "",
) -> int:
    """Print the one line for ``exc`` (and with --debug its traceback first); return ``code``."""
    if args.debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    message = " ".join((text or str(exc)).split())  # one line, whatever the message held
    print(f"brokergate: {message}{hint}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
