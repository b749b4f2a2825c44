"""Where the standalone full application's time goes per request (issue 11).

The real application as ``brokergate gateway serve`` wires it (TLS with the client
certificate validated in code, certificate session, route policy, identity headers, signed
assertion, the upstream pool), in this process, on loopback, against a static nginx
upstream; ``ab -k -n N`` (a subprocess) sends a fixed number of keep-alive requests with one
broker certificate and its session cookie. cProfile counts CPU time (``time.process_time``),
not wall-clock, so other load on the machine does not inflate the figures. Prints CPU µs
per request for the functions with the largest cumulative and own time.

Run: ``python -m bench._profile_standalone`` (BENCH_REQUESTS, default 20000). Not part of
``make bench``: a profile, not a ratio (the profiler itself roughly doubles the cost).
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import re
import tempfile
import time
from pathlib import Path

from bench.gateway_vs_nginx import (
    LOAD_CPU,
    SECRET,
    _tickets_as_nginx_sends_them,
    free_port,
    make_full_app_setup,
    make_material,
    nginx_command,
    running,
    session_cookie,
    upstream_block,
)

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "20000"))
CONCURRENCY = 20
# BENCH_COOKIE=0: a client that keeps no cookies (bench.gateway_core's ab): the certificate
# session is found again by fingerprint on every request.
WITH_COOKIE = os.environ.get("BENCH_COOKIE", "1") != "0"
# BENCH_PROFILE=0: no profiler, only the process's CPU time per request (the real figure).
PROFILE = os.environ.get("BENCH_PROFILE", "1") != "0"


async def _profile(
    store_url: str, combined: Path, server_cert: Path, server_key: Path, upstream: str, ca: Path
) -> None:
    from aiohttp import web

    from gateway import GatewayMetrics, GatewaySettings, gateway_app_factory, ssl_context_factory

    port = free_port()
    settings = GatewaySettings(
        host="127.0.0.1",
        port=port,
        server_cert=server_cert,
        server_key=server_key,
        upstream_url=upstream,
        public_url=f"https://127.0.0.1:{port}",
        metrics_port=0,
    )
    context = ssl_context_factory(settings=settings, store_url=store_url)()
    assert context is not None
    _tickets_as_nginx_sends_them(context)
    app = gateway_app_factory(settings=settings, store_url=store_url, secret_key=SECRET)(
        context, GatewayMetrics()
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    url = f"https://127.0.0.1:{port}/portal/start"
    try:
        from bench.gateway_vs_nginx import Material

        material = Material(
            ca=ca,
            server_cert=server_cert,
            server_key=server_key,
            client_cert=combined,
            client_key=combined,
            client_combined=combined,
        )
        cookie = await asyncio.to_thread(session_cookie, port, material, ca)
        command = ["taskset", "-c", LOAD_CPU, "ab", "-q", "-k", "-c", str(CONCURRENCY)]
        command += ["-n", str(REQUESTS), "-E", str(combined)]
        command += ["-C", cookie, url] if WITH_COOKIE else [url]
        profiler = cProfile.Profile(time.process_time)
        cpu_before = time.process_time()
        if PROFILE:
            profiler.enable()
        ab = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await ab.communicate()
        profiler.disable()
        cpu = time.process_time() - cpu_before
    finally:
        await runner.cleanup()
    text = out.decode()
    done = re.search(r"Complete requests:\s+(\d+)", text)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", text)
    count = int(done.group(1)) if done else REQUESTS
    print(f"{count} keep-alive requests, non-2xx {non2xx.group(1) if non2xx else 0}", end="")
    under = "under the profiler " if PROFILE else ""
    print(f"; process CPU {under}{cpu / count * 1e6:.0f} µs/request", err.decode())
    if not PROFILE:
        return
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = [(name, nc, tt, ct) for name, (_cc, nc, tt, ct, _callers) in stats.items()]
    ours = [r for r in rows if "/gateway/" in r[0][0] or "/store/" in r[0][0]]
    for title, index, chosen in (("cumulative", 3, rows), ("own", 2, rows), ("ours", 3, ours)):
        print(f"--- by {title} time: CPU µs per request, calls per request, function")
        for name, nc, tt, ct in sorted(chosen, key=lambda r: -r[index])[:45]:
            value = ct if index == 3 else tt
            where = f"{Path(name[0]).name}:{name[1]}({name[2]})"
            print(f"{value / count * 1e6:8.1f}  {nc / count:6.2f}  {where}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp:
        folder = Path(tmp)
        base = make_material(folder)
        setup = make_full_app_setup(folder / "full", base)
        upstream_port = free_port()
        with running(
            nginx_command(folder / "upstream", upstream_block(upstream_port), LOAD_CPU),
            upstream_port,
            folder / "upstream.log",
        ):
            asyncio.run(
                _profile(
                    setup.store_url,
                    setup.material.client_combined,
                    base.server_cert,
                    base.server_key,
                    f"http://127.0.0.1:{upstream_port}",
                    base.ca,
                )
            )


if __name__ == "__main__":
    main()
