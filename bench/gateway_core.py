"""What gw-core's full app costs on top of the bare proxy, side by side in one run.

Both sides: the same worker code (``gateway.tls._workers.run_worker``, asyncio), the same TLS
context (``gateway.tls._context.create_server_context``: optional client certificate, our CA names,
no OpenSSL chain check), the real proxy (``ProxyForwarder``) to the same static nginx
upstream, pinned to CPU 0; ``ab -E`` presents a broker certificate issued by our CA.

* **proxy only** — a minimal app that forwards with fixed identity headers (what
  ``bench.gateway_vs_nginx`` measures);
* **full app** — ``create_app``: certificate evaluation from the trust cache, single
  sign-on session, route policy with path normalisation, identity headers and the signed
  assertion (both reused for ≤ 5 s), security headers — on a SQLite store with the CA
  initialised. ``ab`` sends the session cookie of one certificate sign-on (``-C``), as a
  browser does (and as ``bench.gateway_vs_nginx``'s full application does);
* **full app, no cookie** — the same for a client that keeps no cookies: the certificate
  session is found again by fingerprint and its cookie sent again on every answer;
* **full app (before)** — only with ``BENCH_BEFORE=/path/to/an/older/checkout``: the full
  app (with the cookie) from that checkout's code, in the same run, for before/after
  figures side by side.

Measured: keep-alive requests/s and new full handshakes/s, also per server CPU-second
(robust against other load on the machine). Run: ``python -m bench gateway_core``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.gateway_vs_nginx import (
    LOAD_CPU,
    NGINX,
    REPO,
    ROUNDS,
    SECONDS,
    SERVER_CPU,
    AbResult,
    Material,
    _median,
    _per_cpu,
    _rate,
    _tickets_as_nginx_sends_them,
    free_port,
    make_material,
    nginx_command,
    run_ab,
    running,
    session_cookie,
    upstream_block,
)

SECRET = b"bench-secret-key-0123456789abcdef"
BEFORE = os.environ.get("BENCH_BEFORE", "")  # an older checkout: its full app, side by side
PASSPHRASE = "bench passphrase, not a secret"


def _store_with_broker(folder: Path) -> tuple[str, Path]:
    """A SQLite store with the CA initialised and one broker certificate (EC P-256: cheap
    for ``ab`` to sign with). Returns the URL and the cert+key PEM for ``ab -E``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from ca import CASettings, CertificateAuthority, create_user
    from store import (
        OUTBOX_PURPOSE,
        MailOutbox,
        Sealer,
        make_engine,
        open_mail_secrets,
        session_factory,
        system_clock,
        transaction,
        upgrade,
    )

    url = f"sqlite:///{folder / 'bench.db'}"
    engine = make_engine(url)
    upgrade(engine)
    sessions = session_factory(engine)
    sealer = Sealer(secret=SECRET, purpose=OUTBOX_PURPOSE)
    authority = CertificateAuthority(
        settings=CASettings(passphrase=PASSPHRASE, ca_key_type="ec-p256", leaf_key_type="ec-p256"),
        sessions=sessions,
        clock=system_clock,
        outbox_sealer=sealer,
    )
    authority.init("bench")
    with transaction(sessions) as session:
        user = create_user(
            session,
            broker_number="60/123/4567",
            email="bench@example.org",
            name="Bench Broker",
            now=system_clock(),
            actor="bench",
        )
    issued = authority.issue_certificate(user.id, "bench")
    with sessions() as session:
        mail = session.query(MailOutbox).filter_by(kind="certificate_password").one()
        password = open_mail_secrets(mail, sealer)["password"]
    key, cert, _ = pkcs12.load_key_and_certificates(issued.pkcs12, password.encode())
    assert key is not None and cert is not None
    combined = folder / "broker-combined.pem"
    combined.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    combined.chmod(0o600)
    engine.dispose()
    return url, combined


def serve(spec: dict[str, str]) -> int:
    """One side, in its own process (``python -m bench.gateway_core _serve SPEC``)."""
    import ssl

    from aiohttp import web

    from ca import load_trust_material
    from gateway import (
        GatewayMetrics,
        GatewaySettings,
        ProxyForwarder,
        ServeOptions,
        create_app,
        create_server_context,
        run_worker,
    )
    from store import make_engine, session_factory

    settings = GatewaySettings(upstream_url=spec["upstream"], upstream_pool_size=64)

    def tls() -> ssl.SSLContext:
        engine = make_engine(spec["store"])
        with session_factory(engine)() as session:
            issuers = list(load_trust_material(session).issuing_by_generation.values())
        engine.dispose()
        context = create_server_context(
            cert_chain=Path(spec["cert"]), private_key=Path(spec["key"]), client_ca_issuers=issuers
        )
        _tickets_as_nginx_sends_them(context)  # no resumption by ab; no Nagle stall either
        return context

    def app_factory(context: ssl.SSLContext | None, metrics: GatewayMetrics) -> web.Application:
        forwarder = ProxyForwarder(settings, metrics=metrics)
        if spec["mode"] != "proxy":
            app = create_app(
                settings=settings,
                store_url=spec["store"],
                secret_key=SECRET,
                forward=forwarder,
                tls_context=context,
                metrics=metrics,
            )
        else:
            identity = {"X-Brokergate-User-Id": "1", "X-Brokergate-Level": "strong"}

            async def handle(request: web.Request) -> web.StreamResponse:
                return await forwarder(request, identity_headers=identity)

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
        app.cleanup_ctx.append(forwarder.pool_context)
        return app

    options = ServeOptions(host="127.0.0.1", port=int(spec["port"]), workers=1, shutdown_grace=5)
    return run_worker(0, options, app_factory, tls)


def main() -> None:
    if shutil.which("ab") is None or not Path(NGINX).exists():
        print("skipped: needs ab (apache2-utils) and nginx (make system-deps)")
        return
    if len(os.sched_getaffinity(0)) < 2:
        print("skipped: needs two CPUs (server on one, load generator on the other)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-core-") as tmp:
        folder = Path(tmp)
        material = make_material(folder)
        store_url, broker_pem = _store_with_broker(folder)
        # ab presents our broker certificate; the server side only needs server cert and key.
        client = Material(
            ca=material.ca,
            server_cert=material.server_cert,
            server_key=material.server_key,
            client_cert=broker_pem,
            client_key=broker_pem,
            client_combined=broker_pem,
        )
        upstream_port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        # (mode, name, serving code, send the session cookie)
        sides = [
            ("proxy", "proxy only", REPO, False),
            ("full", "full app (gw-core)", REPO, True),
            ("full", "full app, no cookie", REPO, False),
        ]
        if BEFORE:
            sides.append(("full", "full app (before)", Path(BEFORE).resolve(), True))
        results: dict[str, dict[str, list[AbResult]]] = {
            name: {"keepalive": [], "handshakes": []} for _, name, _, _ in sides
        }
        with running(
            nginx_command(folder / "upstream", upstream_block(upstream_port), LOAD_CPU),
            upstream_port,
            folder / "upstream.log",
        ):
            port = free_port()
            for _ in range(ROUNDS):
                for mode, name, code, with_cookie in sides:
                    spec = {
                        "mode": mode,
                        "port": str(port),
                        "upstream": f"http://127.0.0.1:{upstream_port}",
                        "store": store_url,
                        "cert": str(material.server_cert),
                        "key": str(material.server_key),
                    }
                    command = ["taskset", "-c", SERVER_CPU, sys.executable, "-m"]
                    command += ["bench.gateway_core", "_serve", json.dumps(spec)]
                    side_env = {**env, "PYTHONPATH": str(code)}
                    log = folder / f"{mode}.log"
                    with running(command, port, log, side_env, cwd=code) as proc:
                        extra: tuple[str, ...] = ()
                        if with_cookie:
                            extra = ("-C", session_cookie(port, client, material.ca))
                        url = f"https://127.0.0.1:{port}/portal/start"
                        for kind, keepalive in (("keepalive", True), ("handshakes", False)):
                            result = run_ab(
                                url, client, keepalive=keepalive, server_pid=proc.pid, extra=extra
                            )
                            results[name][kind].append(result)
    base = results["proxy only"]
    print()
    print("| side | keep-alive req/s | per server CPU-s | p50 / p99 ms | handshakes/s | "
          "per server CPU-s | failed |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, kinds in results.items():
        k, h = kinds["keepalive"], kinds["handshakes"]
        print(
            f"| {name} | {_rate(k):,.0f} ({_rate(k) / _rate(base['keepalive']):.2f}x) | "
            f"{_per_cpu(k):,.0f} ({_per_cpu(k) / _per_cpu(base['keepalive']):.2f}x) | "
            f"{_median([r.p50_ms for r in k]):.0f} / {_median([r.p99_ms for r in k]):.0f} | "
            f"{_rate(h):,.0f} ({_rate(h) / _rate(base['handshakes']):.2f}x) | "
            f"{_per_cpu(h):,.0f} ({_per_cpu(h) / _per_cpu(base['handshakes']):.2f}x) | "
            f"{sum(r.failed for r in k + h)} |"
        )
    print(f"(medians of {ROUNDS} interleaved rounds of {SECONDS}s; ratios are x proxy only)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_serve":
        sys.exit(serve(json.loads(sys.argv[2])))
    main()
