"""``brokergate cert``: issue (one, bulk, CSV), list, show and revoke broker certificates.

The PKCS#12 is written with mode 0600 inside the issuing transaction: if the file
cannot be written, the certificate and its password mail are rolled back too, so
no certificate exists whose file was lost. The password is never printed: it is
queued for the broker's email (``brokergate mail pending`` shows it is queued).

Key files go only where they are told to: ``--out FILE`` / ``--out-dir DIR``, or the
configured ``ca.pkcs12_dir``; never silently into the current folder (a repository root,
one ``git add .`` away from a commit).

A user who already has a valid certificate gets no second one without a word: ``cert
issue`` refuses unless ``--replace`` (the new one replaces them: they are revoked as
superseded in the same transaction) or ``--additional`` (a second device: both stay valid).
"""

from __future__ import annotations

import argparse
import csv
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from tqdm import tqdm

from brokergate._cli_ca import authority_for
from brokergate._config import parse_duration
from brokergate._context import CliContext
from brokergate._output import (
    check_new_file,
    format_time,
    print_json,
    print_table,
    write_private_file,
)
from ca import (
    CAError,
    CertificateAuthority,
    UnknownCertificate,
    create_user,
    find_user,
    normalise_email,
    normalise_serial,
)
from store import Certificate, CertificateStatus, RevocationReason, User, UserStatus, transaction


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cert = sub.add_parser("cert", help="broker certificates: issue, list, show, revoke")
    cert_sub = cert.add_subparsers(dest="cert_command", required=True, metavar="COMMAND")

    p = cert_sub.add_parser(
        "issue",
        help="issue a certificate as PKCS#12; the password goes to the broker by email",
        description="Issue one certificate (USER), one for every active user without a valid "
        "certificate (--all-without-cert), or one per row of a CSV file (--csv; columns email, "
        "and broker_number, name, locale to create users that do not exist yet).",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("user", nargs="?", metavar="USER", help="user id or email")
    which.add_argument(
        "--all-without-cert",
        action="store_true",
        help="one certificate for every active user without a valid one",
    )
    which.add_argument(
        "--csv", type=Path, metavar="FILE", help="one certificate per row of this CSV file"
    )
    p.add_argument("--profile", choices=["compat", "modern"], help="PKCS#12 encryption profile")
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="PKCS#12 file for USER (default: <email>.p12 in ca.pkcs12_dir; one of the two "
        "is required)",
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="folder for bulk files (default: ca.pkcs12_dir; one of the two is required)",
    )
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--replace",
        action="store_true",
        help="the user has a valid certificate: issue a new one and revoke the earlier ones "
        "(superseded) in the same step",
    )
    again.add_argument(
        "--additional",
        action="store_true",
        help="the user has a valid certificate: issue one more and keep the earlier ones "
        "valid (e.g. a second device)",
    )
    p.set_defaults(handler=_issue)

    p = cert_sub.add_parser("list", help="list certificates")
    p.add_argument("--expiring", metavar="DURATION", help="only those expiring within, e.g. 60d")
    p.add_argument(
        "--status", choices=["valid", "revoked", "expired"], help="only certificates in this state"
    )
    p.add_argument("--user", metavar="USER", help="only this user's (id or email)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_list)

    p = cert_sub.add_parser("show", help="show one certificate")
    p.add_argument("serial", metavar="SERIAL", help="serial in hex (colons allowed)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--pem", action="store_true", help="print the certificate PEM")
    p.set_defaults(handler=_show)

    p = cert_sub.add_parser("revoke", help="revoke a certificate (idempotent; CRL re-published)")
    p.add_argument("serial", metavar="SERIAL", help="serial in hex (colons allowed)")
    p.add_argument(
        "--reason",
        required=True,
        choices=[r.value for r in RevocationReason],
        help="RFC 5280 reason; keyCompromise for a lost or stolen device",
    )
    p.set_defaults(handler=_revoke)


def _safe_filename(email: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]", "_", email) + ".p12"


def _issue_to_file(
    authority: CertificateAuthority,
    ctx: CliContext,
    user_id: int,
    path: Path,
    args: argparse.Namespace,
) -> tuple[str, datetime, list[str]]:
    """Issue and write the file in one transaction (file failure rolls the issuance back).

    Returns the serial, the expiry and the serials revoked because of ``--replace``.

    Raises:
        AlreadyCertified: the user has a valid certificate and neither ``--replace`` nor
            ``--additional`` was given (nothing issued).
    """
    check_new_file(path)
    written = False
    try:
        with transaction(ctx.sessions) as session:
            earlier = _valid_serials(session, user_id, ctx.clock())
            if earlier and not (args.replace or args.additional):
                raise AlreadyCertified(session.get_one(User, user_id).email, earlier)
            issued = authority.issue_certificate(
                user_id,
                ctx.actor,
                profile=args.profile,
                session=session,
            )
            revoked = []
            if args.replace:
                for serial in earlier:
                    authority.revoke(
                        serial, RevocationReason.SUPERSEDED, ctx.actor, session=session
                    )
                    revoked.append(serial)
            write_private_file(path, issued.pkcs12)
            written = True
    except BaseException:
        if written:  # the commit failed: the file must not outlive the certificate
            path.unlink(missing_ok=True)
        raise
    return issued.serial, issued.not_after, revoked


def _valid_serials(session: Session, user_id: int, now: datetime) -> list[str]:
    return list(
        session.scalars(
            select(Certificate.serial)
            .where(
                Certificate.user_id == user_id,
                Certificate.status == CertificateStatus.VALID,
                Certificate.not_after > now,
            )
            .order_by(Certificate.id)
        )
    )


class AlreadyCertified(CAError):
    """``cert issue`` for a user who has a valid certificate, without saying what to do."""

    def __init__(self, email: str, serials: list[str]) -> None:
        super().__init__(
            f"{email} already has a valid certificate ({', '.join(serials)}); add --replace "
            "to issue a new one and revoke it, or --additional to issue one more and keep it"
        )


class NoPkcs12Folder(ValueError):
    """Neither an output option nor ``ca.pkcs12_dir`` says where the key file goes."""


def _output_folder(ctx: CliContext, given: Path | None, option: str) -> Path:
    folder = given or ctx.config.ca.pkcs12_dir
    if folder is None:
        raise NoPkcs12Folder(
            f"say where the PKCS#12 file (it holds a private key) goes: {option}, or set "
            "ca.pkcs12_dir (BROKERGATE_CA__PKCS12_DIR) to a private folder"
        )
    if not folder.is_dir():
        raise NoPkcs12Folder(f"folder {folder} does not exist; create it (mode 0700) first")
    return folder


def _issue(args: argparse.Namespace, ctx: CliContext) -> int:
    try:
        if args.user:
            path = args.out
            folder = None if path else _output_folder(ctx, None, "--out FILE")
        else:
            if args.out:
                raise NoPkcs12Folder("--out is for a single USER; bulk issuance uses --out-dir")
            folder = _output_folder(ctx, args.out_dir, "--out-dir DIR")
    except NoPkcs12Folder as exc:
        print(f"brokergate: {exc}", file=ctx.err)
        return 2
    authority = authority_for(ctx)
    if args.user:
        with transaction(ctx.sessions) as session:
            user = find_user(session, args.user)
            user_id, email = user.id, user.email
        path = path or (folder or Path()) / _safe_filename(email)
        try:
            serial, not_after, revoked = _issue_to_file(authority, ctx, user_id, path, args)
        except OSError as exc:
            print(
                f"brokergate: cannot write the PKCS#12 file: {exc}; nothing was issued",
                file=ctx.err,
            )
            return 1
        print(
            f"issued certificate {serial} for {email}, valid until {not_after:%Y-%m-%d}",
            file=ctx.out,
        )
        print(f"PKCS#12 written to {path} (mode 0600)", file=ctx.out)
        print(f"the password is queued for {email} ('brokergate mail pending')", file=ctx.out)
        if revoked:
            print(
                f"revoked {len(revoked)} earlier certificate(s) (superseded): "
                f"{', '.join(revoked)}; CRL re-published",
                file=ctx.out,
            )
        return 0
    assert folder is not None
    targets = _users_without_cert(ctx) if args.all_without_cert else _users_from_csv(ctx, args.csv)
    return _bulk(authority, ctx, targets, args, folder)


@dataclass(frozen=True)
class _Target:
    label: str
    user_id: int | None
    email: str | None
    error: str | None = None


def _users_without_cert(ctx: CliContext) -> list[_Target]:
    now = ctx.clock()
    with transaction(ctx.sessions) as session:
        has_valid = select(Certificate.user_id).where(
            Certificate.status == CertificateStatus.VALID, Certificate.not_after > now
        )
        users = session.scalars(
            select(User)
            .where(User.status == UserStatus.ACTIVE, User.id.not_in(has_valid))
            .order_by(User.id)
        ).all()
        return [_Target(u.email, u.id, u.email) for u in users]


def _users_from_csv(ctx: CliContext, path: Path) -> list[_Target]:
    """One target per CSV row; users that do not exist are created when the row says how."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CsvProblem(f"cannot read {path}: {exc.strerror}") from None
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "email" not in reader.fieldnames:
        raise CsvProblem(
            f"{path}: the first line must name the columns; 'email' is required "
            "(optional: broker_number, name, locale)"
        )
    targets: list[_Target] = []
    for line, row in enumerate(reader, start=2):
        label = f"line {line}"
        try:
            with transaction(ctx.sessions) as session:
                targets.append(_csv_target(session, ctx, row, label))
        except CAError as exc:
            targets.append(_Target(label, None, row.get("email"), str(exc)))
    return targets


def _csv_target(session: Session, ctx: CliContext, row: dict[str, str], label: str) -> _Target:
    email = normalise_email(row.get("email") or "")
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        if not row.get("broker_number") or not row.get("name"):
            return _Target(
                label, None, email, f"no user {email}; give broker_number and name to create one"
            )
        user = create_user(
            session,
            broker_number=row["broker_number"],
            email=email,
            name=row["name"],
            locale=(row.get("locale") or "de").strip(),
            now=ctx.clock(),
            actor=ctx.actor,
            firms=ctx.config.firms,
        )
    return _Target(f"{label} ({email})", user.id, email)


class CsvProblem(CAError):
    """The CSV file itself cannot be used (nothing was issued)."""


def _bulk(
    authority: CertificateAuthority,
    ctx: CliContext,
    targets: list[_Target],
    args: argparse.Namespace,
    folder: Path,
) -> int:
    done: list[str] = []
    failed: list[str] = [f"{t.label}: {t.error}" for t in targets if t.error]
    todo = [t for t in targets if not t.error]
    for target in tqdm(todo, desc="issuing", unit="cert", file=ctx.err, disable=None):
        assert target.user_id is not None and target.email is not None
        path = folder / _safe_filename(target.email)
        try:
            serial, _, _ = _issue_to_file(authority, ctx, target.user_id, path, args)
            done.append(f"{target.email}: {serial} -> {path}")
        except (CAError, OSError) as exc:
            # One failing row neither stops nor corrupts the rest: its transaction rolled back.
            failed.append(f"{target.label}: {exc}")
    for line in done:
        print(f"issued  {line}", file=ctx.out)
    for line in failed:
        print(f"FAILED  {line}", file=ctx.out)
    print(
        f"summary: {len(done)} issued, {len(failed)} failed; passwords are queued for email",
        file=ctx.out,
    )
    return 1 if failed else 0


def _status_of(cert: Certificate, now: datetime) -> str:
    if cert.status == CertificateStatus.REVOKED:
        return "revoked"
    return "expired" if cert.not_after <= now else "valid"


def _list(args: argparse.Namespace, ctx: CliContext) -> int:
    now = ctx.clock()
    query = select(Certificate).order_by(Certificate.not_after)
    if args.expiring:
        try:
            within = parse_duration(args.expiring)
        except ValueError as exc:
            print(f"brokergate: --expiring: {exc}", file=ctx.err)
            return 2
        query = query.where(
            Certificate.status == CertificateStatus.VALID,
            Certificate.not_after > now,
            Certificate.not_after <= now + within,
        )
    if args.status == "revoked":
        query = query.where(Certificate.status == CertificateStatus.REVOKED)
    elif args.status == "valid":
        query = query.where(
            Certificate.status == CertificateStatus.VALID, Certificate.not_after > now
        )
    elif args.status == "expired":
        query = query.where(
            Certificate.status == CertificateStatus.VALID, Certificate.not_after <= now
        )
    with transaction(ctx.sessions) as session:
        if args.user:
            query = query.where(Certificate.user_id == find_user(session, args.user).id)
        rows = [
            {
                "serial": c.serial,
                "email": c.user.email,
                "broker_number": c.user.organisation.broker_number,
                "status": _status_of(c, now),
                "not_before": c.not_before,
                "not_after": c.not_after,
                "days_left": max(0, (c.not_after - now).days),
                "generation": c.generation_id,
            }
            for c in session.scalars(query)
        ]
    if args.json:
        print_json(rows, ctx.out)
        return 0
    print_table(
        [
            (r["serial"], r["email"], r["status"], r["not_after"], r["days_left"], r["generation"])
            for r in rows
        ],
        ["SERIAL", "EMAIL", "STATUS", "VALID UNTIL", "DAYS", "GEN"],
        ctx.out,
    )
    return 0


def _show(args: argparse.Namespace, ctx: CliContext) -> int:
    now = ctx.clock()
    serial = normalise_serial(args.serial)
    with transaction(ctx.sessions) as session:
        cert = session.scalar(select(Certificate).where(Certificate.serial == serial))
        if cert is None:
            raise UnknownCertificate(args.serial)
        info = {
            "serial": cert.serial,
            "fingerprint_sha256": cert.fingerprint_sha256,
            "subject": cert.subject,
            "user": f"{cert.user.id} <{cert.user.email}>",
            "status": _status_of(cert, now),
            "not_before": cert.not_before,
            "not_after": cert.not_after,
            "generation": cert.generation_id,
            "key_type": cert.key_type,
            "p12_profile": cert.p12_profile,
            "issued_at": cert.issued_at,
            "issued_by": cert.issued_by,
            "revoked_at": cert.revoked_at,
            "revocation_reason": cert.revocation_reason.value if cert.revocation_reason else None,
        }
        pem = cert.cert_pem
    if args.json:
        print_json({**info, "pem": pem} if args.pem else info, ctx.out)
        return 0
    for key, value in info.items():
        shown = format_time(value) if isinstance(value, datetime) else value
        print(f"{key + ':':<20}{'-' if shown is None else shown}", file=ctx.out)
    if args.pem:
        ctx.out.write(pem)
    return 0


def _revoke(args: argparse.Namespace, ctx: CliContext) -> int:
    changed = authority_for(ctx).revoke(args.serial, RevocationReason(args.reason), ctx.actor)
    serial = normalise_serial(args.serial)
    if changed:
        print(f"certificate {serial} revoked ({args.reason}); CRL re-published", file=ctx.out)
    else:
        print(f"certificate {serial} was already revoked; nothing changed", file=ctx.out)
    return 0
