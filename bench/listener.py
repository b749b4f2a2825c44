"""What the bounded listener costs: aiohttp's ``TCPSite`` against ``GatewaySite``, side by side.

Both sides serve the same tiny aiohttp app ("hello", no store, no proxy) over the same TLS
context (the bench CA's server certificate, optional client certificate), one asyncio
worker pinned to ``SERVER_CPU``; ``ab`` on ``LOAD_CPU`` presents the bench broker
certificate. ``GatewaySite`` adds our own accept loop (connection cap), a bounded handshake
and a watchdog protocol in front of aiohttp's handler that sees every chunk
(gateway/tls/_listener.py): this measures that hop, nothing else.

Measured: keep-alive requests/s and new full handshakes/s, also per server CPU-second.
Run: ``python -m bench listener``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import sys
import tempfile
from pathlib import Path

from bench.gateway_vs_nginx import (
    REPO,
    ROUNDS,
    SERVER_CPU,
    AbResult,
    Material,
    _per_cpu,
    _rate,
    free_port,
    make_material,
    run_ab,
    running,
)

SITES = ("TCPSite", "GatewaySite")


async def _serve(site_kind: str, port: int, material_dir: Path) -> None:
    from aiohttp import web

    from gateway.tls import ConnectionLimits, GatewaySite

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(material_dir / "server.pem", material_dir / "server-key.pem")
    context.load_verify_locations(material_dir / "ca.pem")
    context.verify_mode = ssl.CERT_OPTIONAL
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site: web.BaseSite
    if site_kind == "GatewaySite":
        site = GatewaySite(
            runner, "127.0.0.1", port, ssl_context=context, limits=ConnectionLimits()
        )
    else:
        site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=context)
    await site.start()
    try:
        await asyncio.Event().wait()  # until terminated
    finally:
        await runner.cleanup()


def _measure(
    site_kind: str, material: Material, material_dir: Path, folder: Path
) -> tuple[float, float, float, float]:
    port = free_port()
    command = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "bench.listener"]
    command += ["serve", site_kind, str(port), str(material_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with running(command, port, folder / f"{site_kind}.log", env=env) as proc:
        url = f"https://127.0.0.1:{port}/"
        keepalive: list[AbResult] = []
        handshakes: list[AbResult] = []
        for _ in range(ROUNDS):
            keepalive.append(run_ab(url, material, keepalive=True, server_pid=proc.pid))
            handshakes.append(run_ab(url, material, keepalive=False, server_pid=proc.pid))
    return _rate(keepalive), _per_cpu(keepalive), _rate(handshakes), _per_cpu(handshakes)


def main() -> None:
    if not shutil.which("ab"):
        print("ab (apache2-utils) is not installed: skipped")
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-listener-"))
    try:
        columns = ("keep-alive r/s", "per CPU-s", "handshakes/s", "per CPU-s")
        print(f"{'site':<12} " + " ".join(f"{c:>14}" for c in columns))
        material_dir = folder / "material"
        material_dir.mkdir()
        material = make_material(material_dir)
        for site_kind in SITES:
            ka, ka_cpu, hs, hs_cpu = _measure(site_kind, material, material_dir, folder)
            print(f"{site_kind:<12} " + " ".join(f"{v:>14.0f}" for v in (ka, ka_cpu, hs, hs_cpu)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        asyncio.run(_serve(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])))
    else:
        main()
