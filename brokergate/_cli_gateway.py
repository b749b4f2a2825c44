"""``brokergate gateway serve``: run the mTLS gateway (N workers, graceful drain)."""

from __future__ import annotations

import argparse
import importlib.util
import logging

from brokergate._context import CliContext, MissingSecret
from ca import SignerClient, SignerSettings
from gateway import (
    ServeOptions,
    ca_authority_factory,
    gateway_app_factory,
    serve,
    setup_logins,
    ssl_context_factory,
    store_metrics_refresh,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gw = sub.add_parser("gateway", help="the mTLS gateway in front of the portal")
    gw_sub = gw.add_subparsers(dest="gateway_command", required=True, metavar="COMMAND")
    p = gw_sub.add_parser(
        "serve",
        help="serve HTTPS until SIGTERM/SIGINT, then finish in-flight requests and stop",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes sharing the port (default: gateway.workers)",
    )
    p.add_argument(
        "--uvloop",
        action="store_true",
        help="run the workers on uvloop instead of asyncio's loop (docs/benchmarks.md)",
    )
    p.set_defaults(handler=_serve)


def signer_client(settings: SignerSettings) -> SignerClient | None:
    """The signer's client when ``signer.socket_path`` is set (one per worker process)."""
    if settings.socket_path is None:
        return None
    return SignerClient(socket_path=settings.socket_path, timeout=settings.timeout.total_seconds())


def _serve(args: argparse.Namespace, ctx: CliContext) -> int:
    config = ctx.config
    if config.signer.socket_path is not None and config.ca.passphrase:
        # SECURITY (issue 12): with a signer the gateway must not hold the CA passphrase.
        print(
            "brokergate: the gateway has signer.socket_path and ca.passphrase: remove the "
            "passphrase from the gateway's configuration (only the signer needs it)",
            file=ctx.err,
        )
        return 2
    if not config.store.secret_key:
        raise MissingSecret(
            "store.secret_key",
            "BROKERGATE_STORE__SECRET_KEY (or store.secret_key_file in the config file)",
        )
    if args.workers is not None and not 1 <= args.workers <= 256:
        print("brokergate: --workers must be between 1 and 256", file=ctx.err)
        return 2
    # The database must exist with the current schema: a clear line now, not an empty
    # database created by the workers (issue 16) or SQL errors at the first request.
    ctx.engine.dispose()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    options = ServeOptions.from_settings(config.gateway, workers=args.workers)
    if args.uvloop:
        if importlib.util.find_spec("uvloop") is None:
            print(
                "brokergate: --uvloop needs the optional package uvloop: "
                "pip install 'brokergate[uvloop]'",
                file=ctx.err,
            )
            return 2
        options = ServeOptions(**{**options.__dict__, "event_loop": "uvloop"})
    settings = config.gateway
    mode = "TLS" if settings.terminator_format == "none" else f"behind {settings.terminator_format}"
    if settings.proxy_protocol:
        mode += ", PROXY protocol from trusted_proxies"
    print(
        f"brokergate gateway: {options.workers} worker(s) on {settings.host}:{settings.port}"
        f" ({mode}), upstream {settings.upstream_url}",
        file=ctx.out,
        flush=True,
    )
    return serve(
        options,
        app_factory=gateway_app_factory(
            settings=settings,
            store_url=config.store.url,
            secret_key=config.store.secret_key,
            clock=ctx.clock,
            firms=config.firms,  # product names on the "no right" page (issue 13)
            # The login and account pages. Certificate downloads through the signer when
            # signer.socket_path is set (no CA key here), else in-process with the passphrase.
            extensions=[
                setup_logins(
                    settings=config.logins,
                    secret_key=config.store.secret_key,
                    make_authority=ca_authority_factory(
                        ca_settings=config.ca,
                        secret_key=config.store.secret_key,
                        clock=ctx.clock,
                        keyless=config.signer.socket_path is not None,
                    ),
                    signer=signer_client(config.signer),
                    firms=config.firms,
                )
            ],
        ),
        ssl_context_factory=ssl_context_factory(settings=settings, store_url=config.store.url),
        metrics_refresh=store_metrics_refresh(settings),
    )
