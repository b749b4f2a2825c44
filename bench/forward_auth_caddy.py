"""Forward-auth: Caddy alone vs Caddy + brokergate forward-auth, side by side in one run.

The Caddy pair next to ``bench.forward_auth``'s nginx pair, on the same terms: the same
upstream (nginx answering a ~1 KB page, on the load CPU), the same client certificate from
our CA (EC chain), Caddy pinned to the server CPU with ``GOMAXPROCS=1`` (one core, as one
nginx worker):

* **Caddy alone**: an mTLS reverse proxy verifying our chain
  (``client_auth { mode require_and_verify }``);
* **forward-auth**: the shipped ``deploy/caddy/Caddyfile`` (only its ADAPT lines changed)
  asking the real gateway application as ``brokergate gateway`` composes it (one asyncio
  worker, plain HTTP on loopback, pinned to the same server CPU). Caddy 2.6's core has no
  decision cache, so this is the only variant.

Caddy's ``forward_auth`` never copies the answer's ``Set-Cookie`` onto an allowed response
(docs/forward-auth.md), so a browser behind it keeps no session cookie: ``ab`` sends none
either, and every decision is the certificate's single sign-on, which the gateway answers
from its in-memory session for that certificate.

Caddy answers 421 to a client that sends no SNI (an IP address) to a site with
``client_auth``, so ``ab`` asks for ``https://localhost:…`` and Caddy listens on both
loopback addresses.

Run: ``make bench`` or ``python -m bench forward_auth_caddy``; BENCH_SECONDS and
BENCH_ROUNDS as in ``bench.gateway_vs_nginx``.
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
    REPO,
    ROUNDS,
    SERVER_CPU,
    AbResult,
    Material,
    free_port,
    make_full_app_setup,
    make_material,
    nginx_command,
    run_ab,
    running,
    upstream_block,
)

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
CONFIG = REPO / "deploy" / "caddy" / "Caddyfile"
_GLOBAL = "{\n\tadmin off\n\tauto_https off\n}\n"


def _one_file_per_certificate(bundle: Path) -> list[Path]:
    """Caddy 2.6 reads only the first certificate of a ``trusted_ca_cert_file``: one file
    per CA, so the issuing CA (which ``ab``'s leaf names) is trusted too."""
    blocks = re.findall(
        r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
        bundle.read_text(encoding="utf-8"),
        flags=re.DOTALL,
    )
    files = []
    for number, block in enumerate(blocks):
        path = bundle.with_name(f"{bundle.stem}-{number}.pem")
        path.write_text(block + "\n", encoding="utf-8")
        files.append(path)
    return files


def caddy_alone_config(*, port: int, upstream_port: int, material: Material) -> str:
    """Caddy as nginx alone is configured: verify the chain, proxy the portal."""
    trusted = "".join(
        f"\t\t\ttrusted_ca_cert_file {path}\n" for path in _one_file_per_certificate(material.ca)
    )
    return _GLOBAL + (
        f"https://localhost:{port} {{\n"
        "\tbind 127.0.0.1 ::1\n"
        f"\ttls {material.server_cert} {material.server_key} {{\n"
        "\t\tprotocols tls1.2 tls1.3\n"
        "\t\tclient_auth {\n"
        "\t\t\tmode require_and_verify\n"
        f"{trusted}"
        "\t\t}\n"
        "\t}\n"
        f"\treverse_proxy 127.0.0.1:{upstream_port}\n"
        "}\n"
    )


def caddy_forward_auth_config(
    *, port: int, gateway_port: int, upstream_port: int, material: Material
) -> str:
    """The shipped Caddyfile with its ADAPT lines set."""
    text = CONFIG.read_text(encoding="utf-8")
    site = f"https://localhost:{port} {{\n\tbind 127.0.0.1 ::1"
    for pattern, value, times in (
        (r"https://portal\.example:443 \{", site, 1),
        (r"/etc/brokergate/tls/server\.pem", str(material.server_cert), 1),
        (r"/etc/brokergate/tls/server-key\.pem", str(material.server_key), 1),
        (r"/etc/brokergate/tls/ca-bundle\.pem", str(material.ca), 1),
        (r"127\.0\.0\.1:8443", f"127.0.0.1:{gateway_port}", 2),
        (r"127\.0\.0\.1:8080", f"127.0.0.1:{upstream_port}", 1),
    ):
        text, count = re.subn(pattern, value, text)
        if count != times:
            raise RuntimeError(f"{CONFIG.name}: {pattern!r} found {count} times, not {times}")
    return text


def caddy_command(folder: Path, config: str) -> tuple[list[str], dict[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Caddyfile"
    path.write_text(config, encoding="utf-8")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(folder),
        "XDG_DATA_HOME": str(folder),
        "XDG_CONFIG_HOME": str(folder),
        "GOMAXPROCS": "1",  # one core, as one nginx worker
    }
    command = ["taskset", "-c", SERVER_CPU, CADDY, "run", "--config", str(path)]
    return [*command, "--adapter", "caddyfile"], env


def _rate(results: list[AbResult]) -> float:
    return sorted(r.rps for r in results)[len(results) // 2]


def main() -> None:
    if shutil.which("ab") is None or not Path(CADDY).exists():
        print("skipped: needs ab (apache2-utils) and caddy (make system-deps)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-fa-caddy-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        base = make_material(folder)
        setup = make_full_app_setup(folder / "full", base)
        material = setup.material
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
                command, caddy_env = caddy_command(
                    folder / "alone",
                    caddy_alone_config(port=port, upstream_port=upstream_port, material=material),
                )
                with running(command, port, folder / "alone.log", caddy_env) as proc:
                    url = f"https://localhost:{port}/portal/start"
                    for keepalive in (True, False):
                        results.setdefault(f"alone-{keepalive}", []).append(
                            run_ab(url, material, keepalive=keepalive, server_pid=proc.pid)
                        )
                port, gateway_port = free_port(), free_port()
                spec = {
                    "port": gateway_port,
                    "front_port": port,
                    "public_url": f"https://localhost:{port}",
                    "terminator": "caddy",
                    "store_url": setup.store_url,
                    "upstream": f"http://127.0.0.1:{upstream_port}",
                }
                gateway = ["taskset", "-c", SERVER_CPU, sys.executable, "-m"]
                gateway += ["bench.forward_auth", "_gateway", json.dumps(spec)]
                command, caddy_env = caddy_command(
                    folder / "fa",
                    caddy_forward_auth_config(
                        port=port,
                        gateway_port=gateway_port,
                        upstream_port=upstream_port,
                        material=material,
                    ),
                )
                with (
                    running(gateway, gateway_port, folder / "gw.log", env),
                    running(command, port, folder / "fa.log", caddy_env) as proc,
                ):
                    url = f"https://localhost:{port}/portal/start"
                    for keepalive in (True, False):
                        results.setdefault(f"fa-{keepalive}", []).append(
                            run_ab(url, material, keepalive=keepalive, server_pid=proc.pid)
                        )
    failed = sum(r.failed for rs in results.values() for r in rs)
    print("Caddy alone vs Caddy + brokergate forward-auth (Caddy with GOMAXPROCS=1 and one")
    print("gateway worker on the same server CPU; no decision cache; median of rounds):")
    for label, keepalive in (("keep-alive", True), ("full handshakes", False)):
        alone = _rate(results[f"alone-{keepalive}"])
        asked = _rate(results[f"fa-{keepalive}"])
        print(
            f"  {label}: alone {alone:,.0f}/s | forward-auth {asked:,.0f}/s = {asked / alone:.2f}x"
        )
    print(f"  failed or non-2xx requests: {failed}")


if __name__ == "__main__":
    main()
