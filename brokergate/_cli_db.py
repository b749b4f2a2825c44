"""``brokergate db``: schema migrations."""

from __future__ import annotations

import argparse

from brokergate._context import CliContext
from store import current_revisions, head_revisions, upgrade


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="database schema: upgrade, status")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    up = db_sub.add_parser("upgrade", help="apply all pending migrations (safe to repeat)")
    # The one command told to create the database (every other one refuses a missing file).
    up.set_defaults(handler=_upgrade, creates_store=True)
    st = db_sub.add_parser("status", help="show the schema revision and whether it is current")
    st.set_defaults(handler=_status, schema_any=True)


def _upgrade(args: argparse.Namespace, ctx: CliContext) -> int:
    upgrade(ctx.engine)
    print(f"schema is at {', '.join(sorted(current_revisions(ctx.engine)))}", file=ctx.out)
    return 0


def _status(args: argparse.Namespace, ctx: CliContext) -> int:
    current, heads = current_revisions(ctx.engine), head_revisions(ctx.engine)
    print(f"database:  {ctx.engine.url.render_as_string(hide_password=True)}", file=ctx.out)
    print(f"current:   {', '.join(sorted(current)) or '(empty)'}", file=ctx.out)
    print(f"code head: {', '.join(sorted(heads))}", file=ctx.out)
    if current != heads:
        print("the schema is out of date: run 'brokergate db upgrade'", file=ctx.out)
        return 1
    return 0
