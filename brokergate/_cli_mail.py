"""``brokergate mail``: what the outbox holds, and requeueing a failed mail.

Never prints a secret: a row's sealed values are shown only as "sealed" / "-", and
``mail show`` renders the mail with every secret masked.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from brokergate._context import CliContext
from renewal import (
    TEMPLATES,
    MailRenderer,
    MailSummary,
    TemplateError,
    count_by_status,
    get_mail,
    list_mails,
    requeue_mail,
)
from store import MailStatus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mail = sub.add_parser("mail", help="the mail outbox: pending, status, retry, show")
    mail_sub = mail.add_subparsers(dest="mail_command", required=True, metavar="COMMAND")
    pending = mail_sub.add_parser(
        "pending", help="list queued mails (secrets are never shown, only that one is held)"
    )
    pending.add_argument("--json", action="store_true", help="one JSON object per line")
    pending.set_defaults(handler=_pending)
    status = mail_sub.add_parser(
        "status", help="counts per status and every mail that failed permanently, with why"
    )
    status.add_argument("--json", action="store_true", help="JSON output")
    status.set_defaults(handler=_status)
    retry = mail_sub.add_parser("retry", help="requeue a failed mail (due now, attempts reset)")
    retry.add_argument("id", type=int, metavar="ID", help="outbox id (see 'mail status')")
    retry.set_defaults(handler=_retry)
    show = mail_sub.add_parser("show", help="one mail: headers, state, body with secrets masked")
    show.add_argument("id", type=int, metavar="ID", help="outbox id")
    show.set_defaults(handler=_show)


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _as_json(m: MailSummary) -> dict[str, Any]:
    return {
        "id": m.id,
        "created_at": m.created_at.isoformat(),
        "kind": m.kind,
        "template": m.template,
        "to": m.to_addr,
        "locale": m.locale,
        "status": m.status.value,
        "attempts": m.attempts,
        "next_attempt_at": m.next_attempt_at.isoformat(),
        "claimed_by": m.claimed_by,
        "has_secret": m.has_secret,
        "last_error": m.last_error,
        "message_id": m.message_id,
        "sent_at": m.sent_at.isoformat() if m.sent_at else None,
    }


def _table(ctx: CliContext, mails: list[MailSummary], *, with_error: bool) -> None:
    header = f"{'ID':>6}  {'QUEUED (UTC)':19}  {'KIND':20}  {'TO':32}  {'TRY':>3}  "
    header += "LAST ERROR" if with_error else f"{'NEXT ATTEMPT (UTC)':19}  SECRET  CLAIMED BY"
    print(header, file=ctx.out)
    for m in mails:
        line = f"{m.id:>6}  {_time(m.created_at):19}  {m.kind[:20]:20}  {m.to_addr[:32]:32}  "
        line += f"{m.attempts:>3}  "
        if with_error:
            line += (m.last_error or "-").replace("\n", " ")[:200]
        else:
            line += f"{_time(m.next_attempt_at):19}  {'sealed' if m.has_secret else '-':6}  "
            line += m.claimed_by or "-"
        print(line, file=ctx.out)


def _pending(args: argparse.Namespace, ctx: CliContext) -> int:
    mails = list_mails(ctx.sessions, status=MailStatus.PENDING)
    if args.json:
        for m in mails:
            print(json.dumps(_as_json(m)), file=ctx.out)
        return 0
    if not mails:
        print("no mail is waiting", file=ctx.out)
        return 0
    _table(ctx, mails, with_error=False)
    print(f"{len(mails)} mail(s) waiting", file=ctx.out)
    return 0


def _status(args: argparse.Namespace, ctx: CliContext) -> int:
    counts = count_by_status(ctx.sessions)
    failed = list_mails(ctx.sessions, status=MailStatus.FAILED)
    if args.json:
        print(
            json.dumps(
                {
                    "counts": {s.value: n for s, n in counts.items()},
                    "failed": [_as_json(m) for m in failed],
                }
            ),
            file=ctx.out,
        )
        return 0
    print(", ".join(f"{s.value}: {n}" for s, n in counts.items()), file=ctx.out)
    if failed:
        print("\nfailed permanently (requeue with 'brokergate mail retry ID'):", file=ctx.out)
        _table(ctx, failed, with_error=True)
    return 0


def _retry(args: argparse.Namespace, ctx: CliContext) -> int:
    mail = requeue_mail(ctx.sessions, mail_id=args.id, now=ctx.clock())
    note = (
        ""
        if mail.has_secret or not _needs_secret(mail)
        else (" (its secret was already wiped: it will fail again; issue a new one instead)")
    )
    print(f"mail {mail.id} to {mail.to_addr} is queued again{note}", file=ctx.out)
    return 0


def _needs_secret(mail: MailSummary) -> bool:
    return bool(TEMPLATES.get(mail.template, ((), ()))[1]) or mail.template == "activation"


def _show(args: argparse.Namespace, ctx: CliContext) -> int:
    m = get_mail(ctx.sessions, args.id)
    for label, value in (
        ("id", m.id),
        ("status", m.status.value),
        ("kind", m.kind),
        ("template", m.template),
        ("to", m.to_addr),
        ("locale", m.locale),
        ("queued", _time(m.created_at)),
        ("attempts", m.attempts),
        ("next attempt", _time(m.next_attempt_at) if m.status is MailStatus.PENDING else "-"),
        ("claimed by", m.claimed_by or "-"),
        ("secret", "sealed (never shown)" if m.has_secret else "none (or wiped)"),
        ("sent", _time(m.sent_at)),
        ("message-id", m.message_id or "-"),
        ("last error", m.last_error or "-"),
    ):
        print(f"{label + ':':14} {value}", file=ctx.out)
    renderer = MailRenderer(
        public_url=ctx.config.gateway.public_url, time_zone=ctx.config.renewal.time_zone
    )
    try:
        rendered = renderer.render_masked(template=m.template, locale=m.locale, context=m.context)
    except TemplateError as exc:
        print(f"\n(cannot be rendered: {exc})", file=ctx.out)
        return 0
    print(f"\nSubject: {rendered.subject}\n", file=ctx.out)
    print(rendered.text, end="", file=ctx.out)
    return 0
