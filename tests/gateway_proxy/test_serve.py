"""Serving: workers sharing the port, graceful drain on SIGTERM, the CLI end to end."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway._settings import GatewaySettings
from gateway.tls._workers import (
    SSL_READ_BUFFER,
    ServeOptions,
    limit_ssl_read_buffer,
    restart_delay,
)
from tests.conftest import CliRunner
from tests.gateway_proxy._apps import SLOW_STARTED, upstream_app
from tests.gateway_proxy._certs import PemPair
from tests.gateway_proxy._nginx import free_port
from tests.gateway_proxy._proxy_client import (
    ClosedBeforeTLS,
    proxied_request,
    v1_header,
    v2_header,
)
from tests.gateway_proxy.conftest import start_site
from tests.polling import async_wait_for

REPO = Path(__file__).resolve().parents[2]
READY = " ready pid="  # a worker's start line ("ready" alone is also in "already in use")


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, web.Application]]:
    app = upstream_app()
    runner, port = await start_site(app)
    yield f"http://127.0.0.1:{port}", app
    await runner.cleanup()


@contextmanager
def _process(args: list[str], log: Path, **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stderr=out, stdout=out, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _refused(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


async def _drain_check(
    proc: subprocess.Popen[bytes],
    log: Path,
    *,
    base_url: str,
    port: int,
    upstream_app_: web.Application,
    workers: int,
    ssl_context: ssl.SSLContext | bool = True,
    slow_path: str = "/slow?delay=6",  # long enough to still run on a loaded machine
) -> None:
    """A slow request in flight completes although SIGTERM arrives; then the process exits."""
    connector = aiohttp.TCPConnector(ssl=ssl_context)
    async with aiohttp.ClientSession(connector=connector) as client:
        started = len(upstream_app_[SLOW_STARTED])

        async def slow() -> tuple[int, str]:
            async with client.get(base_url + slow_path) as resp:
                return resp.status, await resp.text()

        in_flight = asyncio.create_task(slow())
        await async_wait_for(
            lambda: len(upstream_app_[SLOW_STARTED]) > started,
            timeout=10,
            message="the slow request upstream",
        )
        proc.send_signal(signal.SIGTERM)
        await async_wait_for(
            lambda: log.read_text().count("draining") >= workers,
            timeout=10,
            message="every worker draining",
        )
        # the listening sockets are closed while the request is still running
        await async_wait_for(
            lambda: _refused(port), timeout=4, message="the port to stop accepting"
        )
        assert not in_flight.done()
        status, text = await asyncio.wait_for(in_flight, timeout=15)
    assert status == 200 and "slow done" in text
    await async_wait_for(
        proc.poll, until=lambda code: code is not None, timeout=10, message="no exit after draining"
    )
    output = log.read_text()  # noqa: ASYNC240 (a small local file, once)
    assert proc.returncode == 0, output
    assert output.count("stopped") == workers


def _free_port_pair() -> int:
    """A free port whose successor is free too (worker N's metrics listener is port + N)."""
    for _ in range(50):  # bounded
        first = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", first + 1))
            except OSError:
                continue
        return first
    raise RuntimeError("no two adjacent free loopback ports")


async def test_two_workers_share_the_port_and_drain(
    upstream: tuple[str, web.Application], tmp_path: Path
) -> None:
    upstream_url, app = upstream
    port, metrics_port = free_port(), _free_port_pair()
    while metrics_port + 1 == port:
        metrics_port = _free_port_pair()
    log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "tests.gateway_proxy._apps", "serve", upstream_url, str(port)]
    with _process([*args, "2", str(metrics_port)], log, cwd=REPO) as proc:
        await async_wait_for(
            lambda: log.read_text().count(READY) == 2, timeout=20, message="two workers"
        )
        pids = {line.split("pid=")[1] for line in log.read_text().splitlines() if "ready" in line}
        assert len(pids) == 2 and str(proc.pid) not in pids
        # 40 new connections: SO_REUSEPORT spreads them over both workers, which each count
        # the upstream requests they made on their own metrics listener.
        for _ in range(40):
            async with aiohttp.ClientSession() as client:
                async with client.get(f"http://127.0.0.1:{port}/echo") as resp:
                    assert resp.status == 200
        counts = []
        async with aiohttp.ClientSession() as client:
            for index in range(2):
                url = f"http://127.0.0.1:{metrics_port + index}/metrics"
                async with client.get(url) as resp:
                    text = await resp.text()
                line = next(
                    x
                    for x in text.splitlines()
                    if x.startswith('brokergate_upstream_latency_seconds_count{status_class="2xx"}')
                )
                counts.append(float(line.split()[-1]))
        assert sum(counts) == 40 and all(count > 0 for count in counts), counts
        await _drain_check(
            proc,
            log,
            base_url=f"http://127.0.0.1:{port}",
            port=port,
            upstream_app_=app,
            workers=2,
        )


async def test_single_worker_tls_drains(
    upstream: tuple[str, web.Application], tmp_path: Path, server_pem: PemPair
) -> None:
    upstream_url, app = upstream
    port = free_port()
    log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "tests.gateway_proxy._apps", "serve", upstream_url, str(port)]
    args += ["1", "0", str(server_pem.cert), str(server_pem.key)]
    with _process(args, log, cwd=REPO) as proc:
        await async_wait_for(lambda: READY in log.read_text(), timeout=20, message="the worker")
        context = ssl.create_default_context(cafile=str(server_pem.cert))
        await _drain_check(
            proc,
            log,
            base_url=f"https://127.0.0.1:{port}",
            port=port,
            upstream_app_=app,
            workers=1,
            ssl_context=context,
        )


async def test_uvloop_workers_behind_the_proxy_protocol_drain(
    upstream: tuple[str, web.Application], tmp_path: Path, server_pem: PemPair
) -> None:
    """``proxy_protocol`` with two uvloop workers: each client's address reaches the
    upstream whichever worker takes it, a client without a header is closed before TLS,
    and SIGTERM still drains a request in flight."""
    upstream_url, app = upstream
    port = free_port()
    log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "tests.gateway_proxy._apps", "serve", upstream_url, str(port)]
    args += ["2", "0", str(server_pem.cert), str(server_pem.key), "--uvloop", "--proxy-protocol"]
    context = ssl.create_default_context(cafile=str(server_pem.cert))
    with _process(args, log, cwd=REPO) as proc:
        await async_wait_for(
            lambda: log.read_text().count(READY) == 2, timeout=20, message="two workers"
        )
        for index in range(12):  # new connections: SO_REUSEPORT spreads them over both
            client = f"203.0.113.{index + 1}"
            response = await proxied_request(port, v2_header(client, 40000), context=context)
            assert response.echoed()["x-forwarded-for"] == [client]
        with pytest.raises(ClosedBeforeTLS):
            await proxied_request(port, b"", context=context, coalesce=False)
        started = len(app[SLOW_STARTED])
        in_flight = asyncio.create_task(
            proxied_request(
                port, v1_header("198.51.100.1", 1), context=context, target="/slow?delay=6"
            )
        )
        await async_wait_for(
            lambda: len(app[SLOW_STARTED]) > started, timeout=10, message="the slow request"
        )
        proc.send_signal(signal.SIGTERM)
        await async_wait_for(
            lambda: log.read_text().count("draining") == 2, timeout=10, message="both draining"
        )
        await async_wait_for(
            lambda: _refused(port), timeout=4, message="the port to stop accepting"
        )
        assert not in_flight.done()
        response = await asyncio.wait_for(in_flight, 15)
        assert response.status == 200 and response.body == b"slow done"
        await async_wait_for(
            proc.poll,
            until=lambda code: code is not None,
            timeout=10,
            message="no exit after draining",
        )
    output = log.read_text()
    assert proc.returncode == 0, output
    assert output.count("stopped") == 2 and "Traceback" not in output


def test_ssl_read_buffer_limit() -> None:
    import asyncio.sslproto

    before = asyncio.sslproto.SSLProtocol.max_size
    try:
        limit_ssl_read_buffer()
        assert asyncio.sslproto.SSLProtocol.max_size == SSL_READ_BUFFER == 16384
        with pytest.raises(ValueError, match="one full record"):
            limit_ssl_read_buffer(4096)
    finally:
        asyncio.sslproto.SSLProtocol.max_size = before


def test_restart_delay_doubles_for_a_worker_that_keeps_dying() -> None:
    """At once after a one-off death; 1, 2, 4, 8 s … at most 30 s while it keeps dying."""
    assert [restart_delay(n) for n in range(1, 9)] == [0, 1, 2, 4, 8, 16, 30, 30]


@pytest.mark.slow
async def test_a_worker_that_cannot_start_is_given_up_on(
    upstream: tuple[str, web.Application], tmp_path: Path
) -> None:
    """A worker that dies at every start (here: its TLS key file is missing) is restarted
    with a growing delay, then the supervisor stops and exits 1 instead of forking forever,
    so the service manager sees the failure."""
    upstream_url, _ = upstream
    port = free_port()
    log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "tests.gateway_proxy._apps", "serve", upstream_url, str(port)]
    args += ["2", "0", str(tmp_path / "missing.pem"), str(tmp_path / "missing-key.pem")]
    started = time.monotonic()
    with _process(args, log, cwd=REPO) as proc:
        # 0 + 1 + 2 + 4 + 8 s of delays before the sixth quick death of a slot
        await async_wait_for(
            lambda: proc.poll() is not None, timeout=60, message="the supervisor to give up"
        )
    output = log.read_text()
    assert proc.returncode == 1, output
    assert "restarting it in 0s (restart 1 of this worker)" in output
    assert "restarting it in 8s (restart 5 of this worker)" in output
    assert "6 times in a row" in output and "stopping the others" in output
    assert time.monotonic() - started >= 15


def test_serve_options() -> None:
    options = ServeOptions.from_settings(GatewaySettings(workers=3), workers=None)
    assert options.workers == 3 and options.metrics_port == 9464
    assert ServeOptions.from_settings(GatewaySettings(), workers=2).workers == 2
    with pytest.raises(ValueError, match="workers"):
        ServeOptions(host="127.0.0.1", port=1, workers=0)
    with pytest.raises(ValueError, match="workers must be between"):
        GatewaySettings(workers=0)
    # the worker's thread pool for store calls (and the engine's pool) follows the setting
    assert ServeOptions.from_settings(GatewaySettings(store_threads=48)).store_threads == 48
    with pytest.raises(ValueError, match="store_threads must be between 4 and 256, not 2"):
        GatewaySettings(store_threads=2)


async def test_cli_gateway_serve_end_to_end(
    upstream: tuple[str, web.Application],
    run_cli: CliRunner,
    cli_env: dict[str, str],
    server_pem: PemPair,
    tmp_path: Path,
) -> None:
    """``brokergate gateway serve --workers 2`` with the real app (gw-core's create_app)."""
    upstream_url, app = upstream
    assert run_cli("db", "upgrade").code == 0
    init = run_cli("ca", "init")
    assert init.code == 0, init.err
    port, metrics_port = free_port(), _free_port_pair()  # worker 1: metrics_port + 1
    while metrics_port + 1 == port:
        metrics_port = _free_port_pair()
    config = tmp_path / "brokergate.toml"
    config.write_text(
        f"""
[gateway]
host = "127.0.0.1"
port = {port}
server_cert = "{server_pem.cert}"
server_key = "{server_pem.key}"
upstream_url = "{upstream_url}"
public_url = "https://127.0.0.1:{port}"
metrics_port = {metrics_port}
shutdown_grace = "20s"

[[gateway.routes]]
prefix = "/slow"
level = "anonymous"
""",
        encoding="utf-8",
    )
    log = tmp_path / "cli.log"
    env = {**cli_env, "BROKERGATE_CONFIG": str(config)}
    args = [sys.executable, "-m", "brokergate", "gateway", "serve", "--workers", "2"]
    with _process(args, log, cwd=tmp_path, env=env) as proc:
        await async_wait_for(
            lambda: log.read_text().count(READY) == 2, timeout=30, message="two workers"
        )
        context = ssl.create_default_context(cafile=str(server_pem.cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as client:
            async with client.get(f"https://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200, await resp.text()
            # The served app has the login pages (the logins extension is wired in).
            async with client.get(f"https://127.0.0.1:{port}/_gateway/login/password") as resp:
                page = await resp.text()
                assert resp.status == 200 and 'name="password"' in page, page[:500]
            async with client.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                metrics_text = await resp.text()
        assert "brokergate_certificates_expiring_60d 0.0" in metrics_text
        assert "brokergate_active_sessions" in metrics_text
        await _drain_check(
            proc,
            log,
            base_url=f"https://127.0.0.1:{port}",
            port=port,
            upstream_app_=app,
            workers=2,
            ssl_context=context,
        )
    assert "Traceback" not in log.read_text()


def test_cli_rejects_bad_worker_count(run_cli: CliRunner) -> None:
    result = run_cli("gateway", "serve", "--workers", "0")
    assert result.code == 2 and "--workers must be between 1 and 256" in result.err
