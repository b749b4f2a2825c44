"""``brokergate import firms FILE.csv``: firms, offices and users from one CSV file (issue 13).

One row per thing, its kind in the ``type`` column (``firm``, ``office``, ``user``); the
columns are documented in docs/operations.md ("Offices and rights") with an example in
deploy/examples/firms.csv. The rules:

* All or nothing: every row is applied in ONE transaction, each in its own savepoint so that
  a refused row does not spoil the others' check; every refused row is reported with its
  line number and the reason, and then nothing is imported. ``--check`` runs the same and
  always rolls back.
* Re-importing is refused, not merged: a firm, office or user that exists already (or
  twice in the file) is a refused row. A file of new users for existing firms needs no
  firm rows.
* Activation mails are queued in the same transaction, so only for an import that was
  committed (``--no-activation``: none).
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from brokergate._cli_office import find_office, split_keys
from brokergate._context import CliContext
from ca import (
    CAError,
    DuplicateOffice,
    create_head_office,
    create_sub_office,
    create_user,
    update_office,
    validate_broker_number,
)
from gateway.logins import LoginError, activation_link_base, send_activation
from store import OUTBOX_PURPOSE, Organisation, Sealer, UserRole

COLUMNS = (
    "type",
    "broker_number",
    "office",
    "name",
    "email",
    "address",
    "postcode",
    "city",
    "phone",
    "rights",
    "role",
    "locale",
)
REQUIRED = ("type", "broker_number")
# Which optional columns each kind of row may fill (a value elsewhere is refused, so that a
# shifted column is caught instead of silently ignored).
ALLOWED: dict[str, frozenset[str]] = {
    "firm": frozenset({"name", "email", "address", "postcode", "city", "phone", "rights"}),
    "office": frozenset(
        {"office", "name", "email", "address", "postcode", "city", "phone", "rights"}
    ),
    "user": frozenset({"office", "name", "email", "rights", "role", "locale"}),
}
PROGRESS_STEPS = 10  # plain progress lines (not a terminal): one per tenth of the rows

T = TypeVar("T")


class ImportRefused(CAError):
    """The file cannot be imported as a whole (unreadable, bad header); nothing was written."""


class RowRefused(CAError):
    """One row is wrong; the message says what and what to write instead."""


class FirmExists(RowRefused):
    """A firm row for a firm that is there already (its other rows are still checked)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imp = sub.add_parser("import", help="bulk imports: firms")
    imp_sub = imp.add_subparsers(dest="import_command", required=True, metavar="COMMAND")
    p = imp_sub.add_parser(
        "firms",
        help="import firms, offices and users from one CSV file; all rows or none "
        "(docs/operations.md, 'Offices and rights')",
    )
    p.add_argument("file", type=Path, metavar="FILE.csv", help="UTF-8 CSV, comma or semicolon")
    p.add_argument(
        "--check",
        action="store_true",
        help="check every row against the database and report, but import nothing",
    )
    p.add_argument(
        "--no-activation",
        action="store_true",
        help="do not mail the new users their activation link ('user resend-activation' "
        "sends one later)",
    )
    p.set_defaults(handler=_import_firms)


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, str]
    extra_values: int = 0  # more values than the header has columns

    def get(self, column: str) -> str:
        return self.values.get(column, "").strip()


@dataclass
class Outcome:
    firms: int = 0
    offices: int = 0
    users: list[tuple[int, int]] = field(default_factory=list)  # (line, user id)
    errors: list[str] = field(default_factory=list)
    # What was refused, so that the rows that depend on it say so instead of "unknown".
    refused_firms: dict[str, int] = field(default_factory=dict)
    refused_offices: dict[tuple[str, str], int] = field(default_factory=dict)


def read_rows(path: Path) -> list[Row]:
    """The file's data rows (blank lines skipped); raises :class:`ImportRefused`."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused(f"{path} is not UTF-8 text; save it as 'CSV UTF-8'") from None
    except OSError as exc:
        raise ImportRefused(f"cannot read {path}: {exc.strerror}") from None
    header = text.split("\n", 1)[0]
    # Spreadsheets in de/nl write ';' between columns; the header tells which one this is.
    delimiter = ";" if header.count(";") > header.count(",") else ","
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter, strict=True)
    names = [n.strip().lower() for n in reader.fieldnames or []]
    unknown = [n for n in names if n not in COLUMNS]
    missing = [n for n in REQUIRED if n not in names]
    if not names or unknown or missing or len(set(names)) != len(names):
        problems = []
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}")
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if len(set(names)) != len(names):
            problems.append("a column named twice")
        raise ImportRefused(
            f"{path} line 1 must name the columns ({'; '.join(problems) or 'empty'}); the "
            f"columns are {', '.join(COLUMNS)} ('type' and 'broker_number' required); nothing "
            "was imported"
        )
    reader.fieldnames = names
    rows: list[Row] = []
    try:
        for values in reader:
            extra = values.pop(None, None)
            line = reader.line_num
            cells = {k: v or "" for k, v in values.items()}
            if extra or any(v.strip() for v in cells.values()):
                rows.append(Row(line, cells, len(extra or ())))
    except csv.Error as exc:
        raise ImportRefused(
            f"{path} line {reader.line_num}: not valid CSV ({exc}); nothing was imported"
        ) from None
    if not rows:
        raise ImportRefused(f"{path} has no rows below its header; nothing was imported")
    return rows


def _import_firms(args: argparse.Namespace, ctx: CliContext) -> int:
    rows = read_rows(args.file)
    # A missing secret key fails before anything is written (and before a long check).
    sealer = None if (args.no_activation or args.check) else ctx.sealer(OUTBOX_PURPOSE)
    with ctx.sessions() as session:
        tx = session.begin()
        outcome = Outcome()
        for row in progress(rows, ctx.err, "checking" if args.check else "importing"):
            try:
                with session.begin_nested():
                    _apply(session, ctx, row, outcome)
            except CAError as exc:
                outcome.errors.append(f"line {row.line}: {exc}")
                if not isinstance(exc, FirmExists | DuplicateOffice):
                    # It is not there at all: its rows below say so, not "unknown".
                    _remember_refusal(row, outcome)
        if not outcome.errors and sealer is not None:
            _queue_activations(session, ctx, sealer, outcome)
        if outcome.errors or args.check:
            tx.rollback()
        else:
            tx.commit()
    return _report(args, ctx, rows, outcome)


def _report(args: argparse.Namespace, ctx: CliContext, rows: Sequence[Row], o: Outcome) -> int:
    counts = f"{o.firms} firm(s), {o.offices} office(s), {len(o.users)} user(s)"
    if o.errors:
        for error in o.errors:
            print(f"brokergate: {args.file} {error}", file=ctx.err)
        refused = len({e.split(":", 1)[0] for e in o.errors})
        print(
            f"brokergate: {refused} of {len(rows)} row(s) refused; nothing was imported (fix "
            "them and run again; '--check' checks a file without importing)",
            file=ctx.err,
        )
        return 1
    if args.check:
        print(f"check passed: {args.file} would import {counts}; nothing was written", file=ctx.out)
        return 0
    print(f"imported from {args.file}: {counts}", file=ctx.out)
    if args.no_activation:
        print("no activation mails ('brokergate user resend-activation USER')", file=ctx.out)
    else:
        print(f"{len(o.users)} activation mail(s) queued ('brokergate mail pending')", file=ctx.out)
    return 0


def progress(items: Sequence[T], err: TextIO, desc: str) -> Iterator[T]:
    """``items``, with a progress bar on a terminal and plain lines otherwise (logs, CI)."""
    if err.isatty():
        try:
            columns, lines = os.get_terminal_size(err.fileno())
        except (OSError, ValueError):
            columns, lines = 0, 0
        # A terminal that reports no size (a pty nobody sized: script, some CI consoles)
        # gets no bar at all from tqdm (0 rows hide it): assume 80x24 then.
        yield from tqdm(
            items, desc=desc, unit="row", file=err, ncols=columns or 80, nrows=lines or 24
        )
        return
    total = len(items)
    step = max(1, -(-total // PROGRESS_STEPS))  # ceiling: at most PROGRESS_STEPS lines
    for done, item in enumerate(items, start=1):
        yield item
        if done % step == 0 or done == total:
            print(f"{desc}: {done}/{total} rows", file=err, flush=True)


def _remember_refusal(row: Row, o: Outcome) -> None:
    broker = row.get("broker_number")
    kind = row.get("type").lower()
    if kind == "firm":
        o.refused_firms.setdefault(broker, row.line)
    elif kind == "office":
        o.refused_offices.setdefault((broker, row.get("office")), row.line)


def _apply(session: Session, ctx: CliContext, row: Row, o: Outcome) -> None:
    kind = row.get("type").lower()
    if kind not in ALLOWED:
        raise RowRefused(f"type {row.get('type')!r} is not one of firm, office, user")
    if row.extra_values:
        raise RowRefused(f"{row.extra_values} value(s) more than the header has columns")
    stray = [c for c in COLUMNS if c not in REQUIRED and c not in ALLOWED[kind] and row.get(c)]
    if stray:
        raise RowRefused(f"column(s) {', '.join(stray)} are not for {kind} rows; leave them empty")
    broker = validate_broker_number(row.get("broker_number"))
    if kind == "firm":
        _apply_firm(session, ctx, row, broker)
        o.firms += 1
        return
    firm_line = o.refused_firms.get(broker)
    if firm_line is not None:
        raise RowRefused(f"its firm {broker} (line {firm_line}) was refused")
    if session.scalar(select(Organisation.id).where(Organisation.broker_number == broker)) is None:
        raise RowRefused(
            f"no firm {broker}, neither in the database nor on an earlier line; add a firm "
            "line for it above this one"
        )
    head = find_office(session, broker)
    if kind == "office":
        create_sub_office(
            session,
            head_office=head,
            number=_required(row, "office"),
            name=_required(row, "name"),
            email=_required(row, "email"),
            address=row.get("address") or None,
            postcode=row.get("postcode") or None,
            city=row.get("city") or None,
            phone=row.get("phone") or None,
            rights=split_keys(row.get("rights")) if row.get("rights") else head.rights,
            firms=ctx.config.firms,
            now=ctx.clock(),
            actor=ctx.actor,
        )
        o.offices += 1
        return
    number = row.get("office")
    office_line = o.refused_offices.get((broker, number))
    if office_line is not None:
        raise RowRefused(f"its office {broker}/{number} (line {office_line}) was refused")
    office = find_office(session, f"{broker}/{number}" if number else broker)
    role = row.get("role").lower()
    if role and role not in {r.value for r in UserRole}:
        raise RowRefused(f"role {row.get('role')!r} is not one of head, employee")
    user = create_user(
        session,
        broker_number=broker,
        email=_required(row, "email"),
        name=_required(row, "name"),
        locale=row.get("locale").lower() or "de",
        role=UserRole(role) if role else None,
        office=office,
        rights=split_keys(row.get("rights")) if row.get("rights") else None,
        firms=ctx.config.firms,
        now=ctx.clock(),
        actor=ctx.actor,
    )
    o.users.append((row.line, user.id))


def _apply_firm(session: Session, ctx: CliContext, row: Row, broker: str) -> None:
    if session.scalar(select(Organisation.id).where(Organisation.broker_number == broker)):
        raise FirmExists(
            f"the firm {broker} exists already (an import adds, it does not merge: remove the "
            f"line, or change the firm with 'brokergate office update {broker} ...')"
        )
    org = Organisation(broker_number=broker, name=_required(row, "name"), created_at=ctx.clock())
    session.add(org)
    session.flush()
    head = create_head_office(
        session,
        organisation_id=org.id,
        broker_number=broker,
        name=org.name,
        firms=ctx.config.firms,
        now=ctx.clock(),
        actor=ctx.actor,
    )
    details: dict[str, Any] = {
        column: row.get(column)
        for column in ("address", "postcode", "city", "phone", "email")
        if row.get(column)
    }
    if row.get("rights"):
        details["rights"] = split_keys(row.get("rights"))
    if details:
        update_office(
            session, head, firms=ctx.config.firms, now=ctx.clock(), actor=ctx.actor, **details
        )


def _required(row: Row, column: str) -> str:
    value = row.get(column)
    if not value:
        raise RowRefused(f"a {row.get('type').lower()} row needs a value in '{column}'")
    return value


def _queue_activations(session: Session, ctx: CliContext, sealer: Sealer, o: Outcome) -> None:
    link_base = activation_link_base(ctx.config.gateway.public_url)
    for line, user_id in o.users:
        try:
            send_activation(
                session,
                user_id=user_id,
                link_base=link_base,
                settings=ctx.config.logins,
                mail_sealer=sealer,
                actor=ctx.actor,
                now=ctx.clock(),
            )
        except LoginError as exc:
            o.errors.append(f"line {line}: no activation mail: {exc}")
