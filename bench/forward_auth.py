"""Forward-auth: nginx alone vs nginx + brokergate forward-auth, side by side in one run.

Both sides get the same upstream (nginx answering a ~1 KB page, on the load CPU), the same
client certificate from our CA (EC chain), and one nginx worker on the server CPU:

* **nginx alone**: an mTLS reverse proxy verifying our chain (``ssl_verify_client on``);
* **forward-auth**: the shipped ``deploy/nginx/forward-auth.conf`` (only its ADAPT lines
  changed; nginx keeps its connections to the gateway alive, ``keepalive 32``), asking the
  real gateway application as ``brokergate gateway`` composes it (one asyncio worker, plain
  HTTP on loopback, pinned to the same server CPU) on ``/_gateway/auth`` — once with the
  shipped 2 s decision cache, once with ``proxy_cache`` removed;
* **auth_request's ceiling**: the same config without the cache, its subrequest answered
  ``return 200`` by the front nginx itself: what nginx's own subrequest costs when the
  decision costs nothing.

The Caddy pair is ``bench.forward_auth_caddy``.

The client keeps its cookie, as a browser does: one certificate login (SSO) through the
front first, then ``ab -C`` sends that session with every request. Without it every
decision would start a session and answer ``Set-Cookie``, which nginx never caches.

Run: ``make bench`` or ``python -m bench forward_auth``; BENCH_SECONDS and BENCH_ROUNDS as
in ``bench.gateway_vs_nginx``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from bench.gateway_vs_nginx import (
    NGINX,
    REPO,
    ROUNDS,
    SECRET,
    SERVER_CPU,
    AbResult,
    Material,
    free_port,
    make_full_app_setup,
    make_material,
    nginx_command,
    nginx_front_block,
    run_ab,
    running,
    session_cookie,
    upstream_block,
)

CONFIG = REPO / "deploy" / "nginx" / "forward-auth.conf"


def forward_auth_block(
    *, port: int, gateway_port: int, upstream_port: int, material: Material, cache: Path | None
) -> str:
    """The shipped config with its ADAPT lines set; ``cache=None`` removes the decision cache."""
    text = CONFIG.read_text(encoding="utf-8")
    for pattern, value in (
        (r"listen 443 ssl;", f"listen 127.0.0.1:{port} ssl backlog=4096;"),
        (r"ssl_certificate\s+\S+;", f"ssl_certificate {material.server_cert};"),
        (r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {material.server_key};"),
        (r"server 127\.0\.0\.1:8443;", f"server 127.0.0.1:{gateway_port};"),
        (r"server 127\.0\.0\.1:8080;", f"server 127.0.0.1:{upstream_port};"),
        (r"proxy_cache_path \S+", f"proxy_cache_path {cache or '/nonexistent'}"),
    ):
        text, count = re.subn(pattern, value, text, count=1)
        if count != 1:
            raise RuntimeError(f"{CONFIG.name}: {pattern!r} not found")
    text, count = re.subn(r"/etc/brokergate/tls/ca-bundle\.pem", str(material.ca), text)
    if count != 2:
        raise RuntimeError(f"{CONFIG.name}: the CA bundle lines not found")
    if cache is None:
        text = re.sub(r"^proxy_cache_path .*$", "", text, flags=re.MULTILINE)
        text, count = re.subn(
            r"^\s*proxy_cache(_key|_valid|_methods)?\s.*$", "", text, flags=re.MULTILINE
        )
        if count != 4:
            raise RuntimeError(f"{CONFIG.name}: the decision cache lines not found")
    return text


def _answered_in_place(block: str) -> str:
    """The config with its decision subrequest answered ``200`` by nginx itself."""
    text, count = re.subn(
        r"(location = /_gateway/auth \{\s*internal;\s*)proxy_pass http://brokergate_gateway;",
        r"\1return 200;",
        block,
    )
    if count != 1:
        raise RuntimeError(f"{CONFIG.name}: the decision location not found")
    return text


def serve_forward_auth(spec: dict[str, object]) -> int:
    """The real application in forward-auth mode, plain HTTP on loopback, one worker, with
    the login pages' extension as ``brokergate gateway`` has it (its middleware runs on
    every decision too)."""
    from aiohttp import web

    from gateway import GatewayMetrics, GatewaySettings, gateway_app_factory, setup_logins
    from gateway.logins import LoginSettings

    settings = GatewaySettings(
        host="127.0.0.1",
        port=int(str(spec["port"])),
        upstream_url=str(spec["upstream"]),
        public_url=str(spec.get("public_url", f"https://127.0.0.1:{spec['front_port']}")),
        terminator_format=str(spec.get("terminator", "nginx")),  # type: ignore[arg-type]
        forward_auth=True,
        trusted_proxies=("127.0.0.1/32",),
        metrics_port=0,
    )
    factory = gateway_app_factory(
        settings=settings,
        store_url=str(spec["store_url"]),
        secret_key=SECRET,
        extensions=[setup_logins(settings=LoginSettings(), secret_key=SECRET)],
    )
    web.run_app(
        factory(None, GatewayMetrics()),
        host="127.0.0.1",
        port=settings.port,
        access_log=None,
        print=None,
    )
    return 0


def _rate(results: list[AbResult]) -> float:
    return sorted(r.rps for r in results)[len(results) // 2]


def main() -> None:
    if shutil.which("ab") is None or not Path(NGINX).exists():
        print("skipped: needs ab (apache2-utils) and nginx (make system-deps)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-fa-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)  # nginx's workers (nobody when run as root) read the files
        base = make_material(folder)
        setup = make_full_app_setup(folder / "full", base)
        material = setup.material
        for path in folder.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)  # the cache directory must be reachable; files stay as made
        cache = folder / "auth-cache"
        cache.mkdir()
        cache.chmod(0o777)
        upstream_port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        results: dict[str, list[AbResult]] = {}
        with running(
            nginx_command(folder / "upstream", upstream_block(upstream_port), "1"),
            upstream_port,
            folder / "upstream.log",
        ):
            for _ in range(ROUNDS):
                port = free_port()
                block = nginx_front_block(port, upstream_port, material)
                with running(
                    nginx_command(folder / "alone", block, SERVER_CPU), port, folder / "alone.log"
                ) as proc:
                    url = f"https://127.0.0.1:{port}/portal/start"
                    for keepalive in (True, False):
                        results.setdefault(f"alone-{keepalive}", []).append(
                            run_ab(url, material, keepalive=keepalive, server_pid=proc.pid)
                        )
                # The ceiling of auth_request itself: the subrequest answered 200 by the
                # front nginx itself (no decision, no cache, no connection to anybody).
                port = free_port()
                block = _answered_in_place(
                    forward_auth_block(
                        port=port,
                        gateway_port=upstream_port,
                        upstream_port=upstream_port,
                        material=material,
                        cache=None,
                    )
                )
                with running(
                    nginx_command(folder / "static", block, SERVER_CPU),
                    port,
                    folder / "static.log",
                ) as proc:
                    url = f"https://127.0.0.1:{port}/portal/start"
                    results.setdefault("static-True", []).append(
                        run_ab(url, material, keepalive=True, server_pid=proc.pid)
                    )
                for name, use_cache in (("cache", cache), ("nocache", None)):
                    port, gateway_port = free_port(), free_port()
                    spec = {
                        "port": gateway_port,
                        "front_port": port,
                        "store_url": setup.store_url,
                        "upstream": f"http://127.0.0.1:{upstream_port}",
                    }
                    command = [
                        "taskset",
                        "-c",
                        SERVER_CPU,
                        sys.executable,
                        "-m",
                        "bench.forward_auth",
                        "_gateway",
                        json.dumps(spec),
                    ]
                    block = forward_auth_block(
                        port=port,
                        gateway_port=gateway_port,
                        upstream_port=upstream_port,
                        material=material,
                        cache=use_cache,
                    )
                    with (
                        running(command, gateway_port, folder / f"gw-{name}.log", env),
                        running(
                            nginx_command(folder / name, block, SERVER_CPU),
                            port,
                            folder / f"{name}.log",
                        ) as proc,
                    ):
                        cookie = session_cookie(port, material, base.ca)
                        url = f"https://127.0.0.1:{port}/portal/start"
                        for keepalive in (True, False):
                            results.setdefault(f"{name}-{keepalive}", []).append(
                                run_ab(
                                    url,
                                    material,
                                    keepalive=keepalive,
                                    server_pid=proc.pid,
                                    extra=("-C", cookie),
                                )
                            )
    failed = sum(r.failed for rs in results.values() for r in rs)
    print("nginx alone vs nginx + brokergate forward-auth (one nginx worker and one gateway")
    print("worker on the same server CPU; session cookie kept by ab -C; median of rounds):")
    for label, keepalive in (("keep-alive", True), ("full handshakes", False)):
        alone = _rate(results[f"alone-{keepalive}"])
        cached = _rate(results[f"cache-{keepalive}"])
        uncached = _rate(results[f"nocache-{keepalive}"])
        print(
            f"  {label}: alone {alone:,.0f}/s | forward-auth, cache on {cached:,.0f}/s "
            f"= {cached / alone:.2f}x | cache off {uncached:,.0f}/s = {uncached / alone:.2f}x"
        )
    static = _rate(results["static-True"]) / _rate(results["alone-True"])
    print(f"  auth_request ceiling (nginx answers the subrequest itself): {static:.2f}x")
    print(f"  failed or non-2xx requests: {failed}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_gateway":
        sys.exit(serve_forward_auth(json.loads(sys.argv[2])))
    main()
