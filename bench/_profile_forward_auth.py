"""Where a forward-auth decision's time goes: cProfile of the gateway answering
``/_gateway/auth`` under load (issue 11; docs/benchmarks.md "Forward-auth").

The real application as ``brokergate gateway`` composes it (login pages included), plain
HTTP on loopback, in this process; ``ab -k`` (a subprocess) sends nginx's subrequest shape
(``X-Forwarded-Method/-Uri``, ``X-SSL-Client-Cert`` as ``$ssl_client_escaped_cert``) with
the session cookie of one certificate sign-on, as nginx does for a browser. Prints the
requests/s under the profiler (slower than without it) and the functions by own time.

Run: ``python -m bench._profile_forward_auth`` (BENCH_SECONDS, default 8). Not part of
``make bench``: a profile, not a ratio.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import re
import tempfile
from pathlib import Path
from urllib.parse import quote

from bench.forward_auth import SECRET
from bench.gateway_vs_nginx import free_port, make_full_app_setup, make_material

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))


async def _profile(store_url: str, client_pem: str) -> None:
    import aiohttp
    from aiohttp import web

    from gateway import GatewayMetrics, GatewaySettings, gateway_app_factory, setup_logins
    from gateway.logins import LoginSettings

    port = free_port()
    settings = GatewaySettings(
        host="127.0.0.1",
        port=port,
        upstream_url="http://127.0.0.1:9",
        public_url="https://127.0.0.1",
        terminator_format="nginx",
        forward_auth=True,
        trusted_proxies=("127.0.0.1/32",),
        metrics_port=0,
    )
    app = gateway_app_factory(
        settings=settings,
        store_url=store_url,
        secret_key=SECRET,
        extensions=[setup_logins(settings=LoginSettings(), secret_key=SECRET)],
    )(None, GatewayMetrics())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/_gateway/auth"
    headers = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/portal/start",
        "X-Forwarded-Host": "127.0.0.1",
        "X-SSL-Client-Cert": quote(client_pem, safe=""),
    }
    try:
        async with aiohttp.ClientSession() as client, client.get(url, headers=headers) as resp:
            assert resp.status == 200, resp.status
            cookie = resp.headers["Set-Cookie"].split(";", 1)[0]
        command = ["ab", "-q", "-k", "-c", "20", "-t", str(SECONDS), "-n", "50000000"]
        command += ["-C", cookie]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        profiler = cProfile.Profile()
        profiler.enable()
        ab = await asyncio.create_subprocess_exec(
            *command, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await ab.communicate()
        profiler.disable()
    finally:
        await runner.cleanup()
    text = out.decode()
    rate = re.search(r"Requests per second:\s+([\d.]+)", text)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", text)
    print(f"under the profiler: {rate.group(1) if rate else '?'} req/s", end="")
    print(f", non-2xx {non2xx.group(1) if non2xx else 0}", err.decode()[-200:])
    for order in ("tottime", "cumulative"):
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats(order).print_stats(30)
        print(f"--- by {order}")
        print("\n".join(stream.getvalue().splitlines()[6:40]))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp:
        folder = Path(tmp)
        setup = make_full_app_setup(folder / "full", make_material(folder))
        asyncio.run(_profile(setup.store_url, setup.material.client_cert.read_text()))


if __name__ == "__main__":
    main()
