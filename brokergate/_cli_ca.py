"""``brokergate ca``: initialise, inspect, rotate and retire the CA; write bundle and CRLs."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from brokergate._context import CliContext, MissingSecret
from brokergate._output import print_json, print_table
from ca import (
    SIGNER_PURPOSE,
    CertificateAuthority,
    SessionRules,
    Signer,
    bind_socket,
    load_trust_material,
    make_authority,
    run_signer,
    signer_app,
)
from store import transaction


def authority_for(ctx: CliContext) -> CertificateAuthority:
    """The CA service on the CLI's store; the outbox sealer only if a secret key is set."""
    return make_authority(
        settings=ctx.config.ca,
        sessions=ctx.sessions,
        secret_key=ctx.config.store.secret_key,
        clock=ctx.clock,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = sub.add_parser("ca", help="the certificate authority: init, status, rotate, retire, …")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")

    p = ca_sub.add_parser("init", help="create the root CA and issuing generation 1")
    p.set_defaults(handler=_init)

    p = ca_sub.add_parser(
        "status",
        help="generations, validity, live certificates, next CRL, and where each CA key lives",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_status)

    p = ca_sub.add_parser(
        "rotate", help="make a new issuing generation active (old one stays trusted)"
    )
    p.add_argument(
        "--root",
        action="store_true",
        help="rotate the root too: new root cross-signed by the current one (docs/ca-rotation.md)",
    )
    p.set_defaults(handler=_rotate)

    p = ca_sub.add_parser("retire", help="stop trusting a generation")
    p.add_argument("generation", type=int, metavar="GEN", help="generation number")
    p.add_argument(
        "--force",
        action="store_true",
        help="retire even though live certificates remain (they stop working at once)",
    )
    p.set_defaults(handler=_retire)

    p = ca_sub.add_parser(
        "serve",
        help="run the signer: the only process that opens the CA keys; the gateway asks it "
        "over signer.socket_path (until SIGTERM)",
    )
    p.set_defaults(handler=_serve)

    p = ca_sub.add_parser("bundle", help="write the trust bundle (all non-retired generations)")
    p.add_argument("--out", type=Path, metavar="FILE", help="file to write (default: stdout)")
    p.set_defaults(handler=_bundle)

    p = ca_sub.add_parser(
        "crl", help="re-publish due CRLs and write each generation's CRL (PEM and DER)"
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="folder for gen-N.crl.pem and gen-N.crl (default: the current one)",
    )
    p.add_argument("--force", action="store_true", help="re-publish every CRL now")
    p.set_defaults(handler=_crl)


def _init(args: argparse.Namespace, ctx: CliContext) -> int:
    authority = authority_for(ctx)
    generation = authority.init(ctx.actor)
    print(f"CA initialised: root and issuing generation {generation} created.", file=ctx.out)
    if authority.key_store() == "pkcs11":
        print(
            f"The CA keys were generated in PKCS#11 token {ctx.config.ca.pkcs11_token_label!r} "
            "and cannot leave it; 'brokergate ca status' shows their key ids. Back up the "
            "database and the token (docs/operations.md).",
            file=ctx.out,
        )
    else:
        print(
            "Back up the database now: it holds the encrypted CA keys (docs/operations.md).",
            file=ctx.out,
        )
    authority.close()
    return 0


def _status(args: argparse.Namespace, ctx: CliContext) -> int:
    infos = authority_for(ctx).status()
    if args.json:
        print_json([info.__dict__ for info in infos], ctx.out)
        return 0
    print_table(
        [
            (
                i.generation,
                i.status.value,
                i.subject,
                i.not_before,
                i.not_after,
                i.live_certificates,
                i.crl_next_update,
            )
            for i in infos
        ],
        ["GEN", "STATUS", "SUBJECT", "VALID FROM", "VALID UNTIL", "LIVE", "NEXT CRL UPDATE"],
        ctx.out,
    )
    print("", file=ctx.out)
    print_table(
        [(i.generation, i.key_location, i.root_key_location) for i in infos],
        ["GEN", "ISSUING CA KEY", "ROOT KEY"],
        ctx.out,
    )
    return 0


def _rotate(args: argparse.Namespace, ctx: CliContext) -> int:
    authority = authority_for(ctx)
    generation = authority.rotate_root(ctx.actor) if args.root else authority.rotate(ctx.actor)
    what = "root and issuing CA" if args.root else "issuing CA"
    print(
        f"rotated the {what}: generation {generation} is active; older generations stay "
        "trusted until 'brokergate ca retire GEN'. Redeploy the bundle ('brokergate ca bundle').",
        file=ctx.out,
    )
    return 0


def _retire(args: argparse.Namespace, ctx: CliContext) -> int:
    live = authority_for(ctx).retire(args.generation, ctx.actor, force=args.force)
    note = f" ({live} live certificate(s) stop working now)" if live else ""
    print(f"generation {args.generation} retired{note}.", file=ctx.out)
    return 0


def _serve(args: argparse.Namespace, ctx: CliContext) -> int:
    config = ctx.config
    path = config.signer.socket_path
    if path is None:
        print(
            "brokergate: ca serve needs signer.socket_path (BROKERGATE_SIGNER__SOCKET_PATH)",
            file=ctx.err,
        )
        return 2
    if not config.store.secret_key:
        raise MissingSecret(
            "store.secret_key",
            "BROKERGATE_STORE__SECRET_KEY (or store.secret_key_file in the config file)",
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    authority = authority_for(ctx)
    signer = build_signer(ctx, authority)
    generation = authority.open_active_key()  # a wrong passphrase or PIN: stop here
    try:
        sock = bind_socket(path, group=config.signer.socket_group)
    except KeyError:
        print(
            f"brokergate: signer.socket_group {config.signer.socket_group!r} does not exist",
            file=ctx.err,
        )
        return 2

    def ready() -> None:
        print(
            f"brokergate signer: listening on {path} (generation {generation}, keys: "
            f"{authority.key_store()})",
            file=ctx.out,
            flush=True,
        )

    try:
        asyncio.run(
            run_signer(
                signer_app(signer), sock, ready=ready, metrics_port=config.signer.metrics_port
            )
        )
    finally:
        sock.close()
        path.unlink(missing_ok=True)
        authority.close()
    print("brokergate signer: stopped", file=ctx.out, flush=True)
    return 0


def build_signer(ctx: CliContext, authority: CertificateAuthority) -> Signer:
    """The signer on the CLI's store, applying the gateway's session rules from the config."""
    config = ctx.config
    return Signer(
        authority=authority,
        sessions=ctx.sessions,
        settings=config.signer,
        rules=SessionRules(
            idle_timeout=config.gateway.idle_timeout,
            fresh_login=config.logins.fresh_login,
            downloads_per_window=config.logins.downloads_per_day,
        ),
        answer_sealer=ctx.sealer(SIGNER_PURPOSE),
    )


def _bundle(args: argparse.Namespace, ctx: CliContext) -> int:
    with transaction(ctx.sessions) as session:
        trust = load_trust_material(session)
    if not trust.roots:
        print("no CA yet; run 'brokergate ca init' first", file=ctx.err)
        return 1
    pem = trust.bundle_pem()
    if args.out:
        args.out.write_bytes(pem)
        print(
            f"wrote {len(trust.roots)} root(s) and {len(trust.intermediates)} intermediate(s) "
            f"to {args.out}",
            file=ctx.out,
        )
    else:
        ctx.out.write(pem.decode())
    return 0


def _crl(args: argparse.Namespace, ctx: CliContext) -> int:
    authority = authority_for(ctx)
    published = authority.publish_due_crls(force=args.force)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for generation, pem in sorted(authority.crls().items()):
        crl = x509.load_pem_x509_crl(pem)
        (args.out_dir / f"gen-{generation}.crl.pem").write_bytes(pem)
        (args.out_dir / f"gen-{generation}.crl").write_bytes(crl.public_bytes(Encoding.DER))
        fresh = " (re-published)" if generation in published else ""
        print(
            f"generation {generation}: CRL #{_crl_number(crl)}, next update "
            f"{crl.next_update_utc:%Y-%m-%d %H:%M} UTC{fresh}",
            file=ctx.out,
        )
    return 0


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
