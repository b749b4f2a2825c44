"""The gateway's proxy path against nginx doing the same job, side by side in one run.

Same job: TLS 1.3 with a client certificate verified against our test CA (OpenSSL in the
handshake for both), then an HTTP/1.1 keep-alive proxy to the same upstream, one worker
process pinned to CPU 0 with taskset. The upstream (a static nginx) and the load
generator (ApacheBench, ``ab -E client.pem``: it presents a client certificate) share CPU 1.

Measured:

* keep-alive requests/s and p50/p99 latency (``ab -k``);
* new full mTLS handshakes/s: one request per connection; ``ab`` never resumes a session
  (see ``_tickets_as_nginx_sends_them``), so every connection is a full handshake;
* memory per idle TLS connection: RSS growth of the server with 1,000 connections that
  completed the mTLS handshake and then sit idle, divided by 1,000.

The gateway side is the gateway's serving code (``gateway.tls._workers.run_worker``: the
SSL read-buffer limit, access log off, optional uvloop) around the real proxy
(``ProxyForwarder``) in a minimal app; gw-core's full app (sessions, route policy,
assertion) is not in this path. The load generator's own limit is shown by its CPU use
(it must not sit at 100 % while the server has idle time) and by ``ab`` against nginx
answering directly (the ceiling).

Run: ``make bench`` or ``python -m bench gateway_vs_nginx``. BENCH_SECONDS sets each
measurement's duration (default 8).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from tests.pki import TestCA, key_pem, pem, write_pem_files

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# The server certificate's key decides most of a full handshake's cost on both servers.
# RSA-2048 is what most portals' public server certificates use; "ec-p256" shows the case
# where the handshake is cheap and the gateway's fixed per-connection cost weighs more.
SERVER_KEY = os.environ.get("BENCH_SERVER_KEY", "rsa2048")
IDLE_CONNECTIONS = 1000
KEEPALIVE_CONCURRENCY = 50
HANDSHAKE_CONCURRENCY = 20
SERVER_CPU, LOAD_CPU = "0", "1"
BODY = "<!doctype html><title>portal</title>" + "x" * 1000  # ~1 KB page from the upstream
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REPO = Path(__file__).resolve().parents[1]


# --- certificates ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Material:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_combined: Path  # cert then key, what ab -E wants


def make_material(folder: Path) -> Material:
    """A CA, a server certificate for 127.0.0.1 (SERVER_KEY) and a broker one (EC P-256).

    Made by the CA's own builders (``tests.pki``), so the handshakes carry the extensions
    real broker certificates carry. EC P-256 on the client side: an RSA-2048 signature per
    handshake would make ``ab`` (one thread) the bottleneck of the handshake measurement
    long before either server.
    """
    now = datetime.now(UTC)
    bench_ca = TestCA.root("bench CA", now=now)
    server = bench_ca.server(now=now, key_kind="rsa" if SERVER_KEY == "rsa2048" else "ec")
    client = bench_ca.broker(now=now, name="Erika Mustermann", not_after=now + timedelta(days=2))
    material = Material(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server-key.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client-key.pem",
        client_combined=folder / "client-combined.pem",
    )
    bench_ca.write_cert(material.ca)
    server.write(folder, "server")
    client.write(folder, "client")
    material.client_combined.write_bytes(client.cert_pem().encode() + key_pem(client.key))
    material.client_combined.chmod(0o600)
    return material


# --- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def running(
    command: list[str],
    port: int,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, env=env, cwd=cwd)
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def nginx_command(prefix: Path, http_block: str, cpu: str) -> list[str]:
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log error;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/cb; proxy_temp_path {prefix}/px;
    fastcgi_temp_path {prefix}/fc; uwsgi_temp_path {prefix}/uw; scgi_temp_path {prefix}/sc;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
{http_block}
}}
""",
        encoding="utf-8",
    )
    return ["taskset", "-c", cpu, NGINX, "-p", str(prefix), "-c", str(conf)]


def upstream_block(port: int) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/html; return 200 '{BODY}'; }}
    }}"""


def nginx_front_block(port: int, upstream_port: int, material: Material) -> str:
    return f"""
    upstream portal {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {material.server_cert};
        ssl_certificate_key {material.server_key};
        ssl_protocols TLSv1.3;
        ssl_verify_client on;
        ssl_client_certificate {material.ca};
        ssl_verify_depth 2;
        ssl_session_cache off;
        ssl_session_tickets off;
        location /direct {{ default_type text/html; return 200 '{BODY}'; }}
        location / {{
            proxy_pass http://portal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Brokergate-User-Id 42;
            proxy_set_header X-Brokergate-Level strong;
        }}
    }}"""


def gateway_command(
    port: int,
    upstream_port: int,
    material: Material,
    *,
    loop: str,
    read_buffer: int,
    no_upstream: bool = False,
) -> list[str]:
    return [
        "taskset", "-c", SERVER_CPU, sys.executable, "-m", "bench.gateway_vs_nginx", "_gateway",
        json.dumps(
            {
                "port": port,
                "upstream": f"http://127.0.0.1:{upstream_port}",
                "cert": str(material.server_cert),
                "key": str(material.server_key),
                "ca": str(material.ca),
                "loop": loop,
                "read_buffer": read_buffer,
                "no_upstream": no_upstream,
            }
        ),
    ]  # fmt: skip


def _tickets_as_nginx_sends_them(context: ssl.SSLContext) -> None:
    """Stateful TLS 1.3 tickets, as nginx with ``ssl_session_tickets off`` still sends them.

    ``ab`` never offers a ticket or session back (checked once with nginx logging
    ``$ssl_session_reused``: 3,317 of 3,317 connections were full handshakes), so every
    connection is a full handshake either way. But a server that sends *nothing* after the
    client's Finished (``num_tickets = 0``) leaves the client's request stuck behind Nagle
    until the server's delayed ACK fires (40 ms on Linux): an earlier version of this
    benchmark did that to the gateway only and measured half its real handshake rate. The
    production gateway keeps OpenSSL's default (two tickets), like this.
    """
    context.options |= ssl.OP_NO_TICKET  # stateful tickets only, as nginx's setting
    context.num_tickets = 2  # OpenSSL's default, which `brokergate gateway serve` keeps


def serve_gateway(spec: dict[str, object]) -> int:
    """The gateway side: the real proxy in a minimal app, served by gateway.tls._workers."""
    from aiohttp import web

    from gateway import GatewayMetrics, GatewaySettings, ProxyForwarder, ServeOptions, run_worker

    settings = GatewaySettings(upstream_url=str(spec["upstream"]), upstream_pool_size=64)
    identity = {"X-Brokergate-User-Id": "42", "X-Brokergate-Level": "strong"}

    def tls() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(str(spec["cert"]), str(spec["key"]))
        context.verify_mode = ssl.CERT_REQUIRED  # OpenSSL verifies the chain, as nginx does
        context.load_verify_locations(str(spec["ca"]))
        _tickets_as_nginx_sends_them(context)
        return context

    def app_factory(_tls: ssl.SSLContext | None, metrics: GatewayMetrics) -> web.Application:
        forwarder = ProxyForwarder(settings, metrics=metrics)

        async def handle(request: web.Request) -> web.StreamResponse:
            return await forwarder(request, identity_headers=identity)

        async def answer(request: web.Request) -> web.StreamResponse:
            return web.Response(body=BODY.encode(), content_type="text/html")

        if spec.get("no_upstream"):  # the serving code alone: what the upstream leg costs
            handle = answer
        app = web.Application()
        app.cleanup_ctx.append(forwarder.pool_context)
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    options = ServeOptions(
        host="127.0.0.1",
        port=int(str(spec["port"])),
        workers=1,
        shutdown_grace=5,
        event_loop="uvloop" if spec["loop"] == "uvloop" else "asyncio",
        ssl_read_buffer=int(str(spec["read_buffer"])),
    )
    return run_worker(0, options, app_factory, tls)


# --- load ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AbResult:
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int
    server_cpu: float  # share of one core used by the server during the run
    ab_cpu: float  # share of one core used by ab


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def server_processes(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def run_ab(
    url: str, material: Material, *, keepalive: bool, server_pid: int, extra: Sequence[str] = ()
) -> AbResult:
    concurrency = KEEPALIVE_CONCURRENCY if keepalive else HANDSHAKE_CONCURRENCY
    command = ["taskset", "-c", LOAD_CPU, "ab", "-q", "-r", "-t", str(SECONDS), "-n", "50000000"]
    command += ["-c", str(concurrency), "-E", str(material.client_combined)]
    command += list(extra)
    command += ["-k", url] if keepalive else [url]
    servers = server_processes(server_pid)
    before = _cpu_seconds(servers)
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ab = psutil.Process(proc.pid)
    ab_cpu = 0.0
    while proc.poll() is None:
        try:
            ab_cpu = _cpu_seconds([ab])
        except psutil.Error:
            pass
        time.sleep(0.1)
    out, err = proc.communicate(timeout=30)
    wall = time.monotonic() - started
    server_cpu = (_cpu_seconds(servers) - before) / wall
    text = out.decode()
    rps = re.search(r"Requests per second:\s+([\d.]+)", text)
    if rps is None:
        raise RuntimeError(f"ab failed: {text}\n{err.decode()}")
    failed = re.search(r"Failed requests:\s+(\d+)", text)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", text)

    def pct(p: int) -> float:
        match = re.search(rf"^\s+{p}%\s+(\d+)", text, re.MULTILINE)
        return float(match.group(1)) if match else float("nan")

    return AbResult(
        rps=float(rps.group(1)),
        p50_ms=pct(50),
        p99_ms=pct(99),
        failed=int(failed.group(1) if failed else 0) + int(non2xx.group(1) if non2xx else 0),
        server_cpu=server_cpu,
        ab_cpu=ab_cpu / wall,
    )


def hold_connections(spec: dict[str, object]) -> int:
    """Open N mTLS connections, report, keep them open until stdin closes."""
    context = ssl.create_default_context(cafile=str(spec["ca"]))
    context.check_hostname = False
    context.load_cert_chain(str(spec["cert"]), str(spec["key"]))
    held = []
    for _ in range(int(str(spec["count"]))):
        raw = socket.create_connection(("127.0.0.1", int(str(spec["port"]))), timeout=10)
        held.append(context.wrap_socket(raw))
    print(f"held {len(held)}", flush=True)
    sys.stdin.read()
    for conn in held:
        conn.close()
    return 0


def idle_memory_per_connection(port: int, server_pid: int, material: Material) -> float:
    """Bytes of server RSS per idle mTLS connection (RSS growth / IDLE_CONNECTIONS)."""
    servers = server_processes(server_pid)
    warm = subprocess.run(
        ["ab", "-q", "-n", "200", "-c", "20", "-E", str(material.client_combined),
         f"https://127.0.0.1:{port}/"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if warm.returncode != 0:
        raise RuntimeError(f"warm-up failed: {warm.stderr.decode()}")
    time.sleep(1.0)
    before = sum(p.memory_info().rss for p in servers)
    spec = {
        "port": port,
        "count": IDLE_CONNECTIONS,
        "ca": str(material.ca),
        "cert": str(material.client_cert),
        "key": str(material.client_key),
    }
    holder = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, sys.executable, "-m", "bench.gateway_vs_nginx", "_hold",
         json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline().decode()
        if not line.startswith("held"):
            raise RuntimeError("the connection holder failed")
        time.sleep(2.0)  # the server finishes the last handshakes (TLS 1.3: after the client)
        after = sum(p.memory_info().rss for p in servers)
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(timeout=30)
    return (after - before) / IDLE_CONNECTIONS


ServerStarter = Callable[[], AbstractContextManager[subprocess.Popen[bytes]]]

# --- the run ------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Side:
    name: str
    start: ServerStarter
    port: int
    keepalive: list[AbResult]
    handshakes: list[AbResult]
    idle_bytes: float = float("nan")

    def measure_round(self, material: Material) -> None:
        url = f"https://127.0.0.1:{self.port}/portal/start"
        with self.start() as proc:
            self.keepalive.append(run_ab(url, material, keepalive=True, server_pid=proc.pid))
            self.handshakes.append(run_ab(url, material, keepalive=False, server_pid=proc.pid))

    def measure_memory(self, material: Material) -> None:
        with self.start() as proc:
            self.idle_bytes = idle_memory_per_connection(self.port, proc.pid, material)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _rate(results: list[AbResult]) -> float:
    return _median([r.rps for r in results])


def _per_cpu(results: list[AbResult]) -> float:
    """Requests per CPU-second of the server: robust when other work shares the CPUs."""
    return _median([r.rps / r.server_cpu for r in results if r.server_cpu > 0])


def _fmt(side: Side, base: Side) -> str:
    k, h = side.keepalive, side.handshakes
    memory = "-" if math.isnan(side.idle_bytes) else f"{side.idle_bytes / 1024:.1f} KB"
    return (
        f"| {side.name} | {_rate(k):,.0f} ({_rate(k) / _rate(base.keepalive):.2f}x) | "
        f"{_per_cpu(k):,.0f} ({_per_cpu(k) / _per_cpu(base.keepalive):.2f}x) | "
        f"{_median([r.p50_ms for r in k]):.0f} / {_median([r.p99_ms for r in k]):.0f} | "
        f"{_rate(h):,.0f} ({_rate(h) / _rate(base.handshakes):.2f}x) | "
        f"{_per_cpu(h):,.0f} ({_per_cpu(h) / _per_cpu(base.handshakes):.2f}x) | "
        f"{memory} | "
        f"{_median([r.server_cpu for r in k]):.0%} / {_median([r.ab_cpu for r in k]):.0%} | "
        f"{_median([r.server_cpu for r in h]):.0%} / {_median([r.ab_cpu for r in h]):.0%} | "
        f"{sum(r.failed for r in k + h)} |"
    )


def main() -> None:
    if shutil.which("ab") is None or not Path(NGINX).exists():
        print("skipped: needs ab (apache2-utils) and nginx (make system-deps)")
        return
    if len(os.sched_getaffinity(0)) < 2:
        print("skipped: needs two CPUs (server on one, load generator on the other)")
        return
    import aiohttp.http_parser

    c_parser = aiohttp.http_parser.HttpRequestParser.__module__ != "aiohttp.http_parser"
    print(
        f"aiohttp {aiohttp.__version__}, C parser: {c_parser}; server key {SERVER_KEY}, "
        f"client key ec-p256, TLS 1.3; {SECONDS}s per measurement, {ROUNDS} rounds"
    )
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        folder = Path(tmp)
        material = make_material(folder)
        upstream_port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with running(
            nginx_command(folder / "upstream", upstream_block(upstream_port), LOAD_CPU),
            upstream_port,
            folder / "upstream.log",
        ):
            nginx_port = free_port()

            def nginx() -> AbstractContextManager[subprocess.Popen[bytes]]:
                block = nginx_front_block(nginx_port, upstream_port, material)
                return running(
                    nginx_command(folder / "front", block, SERVER_CPU),
                    nginx_port,
                    folder / "front.log",
                )

            gateway_port = free_port()

            def gateway(loop: str, read_buffer: int, no_upstream: bool = False) -> ServerStarter:
                command = gateway_command(
                    gateway_port,
                    upstream_port,
                    material,
                    loop=loop,
                    read_buffer=read_buffer,
                    no_upstream=no_upstream,
                )
                return lambda: running(command, gateway_port, folder / f"gw-{loop}.log", env)

            from gateway import SSL_READ_BUFFER

            base = Side(name="nginx", start=nginx, port=nginx_port, keepalive=[], handshakes=[])
            sides = [
                base,
                Side(
                    name="gateway (asyncio)",
                    start=gateway("asyncio", SSL_READ_BUFFER),
                    port=gateway_port,
                    keepalive=[],
                    handshakes=[],
                ),
                Side(
                    name="gateway (uvloop)",
                    start=gateway("uvloop", SSL_READ_BUFFER),
                    port=gateway_port,
                    keepalive=[],
                    handshakes=[],
                ),
            ]
            sides.append(
                Side(
                    name="(gateway serving code alone, no upstream leg)",
                    start=gateway("asyncio", SSL_READ_BUFFER, no_upstream=True),
                    port=gateway_port,
                    keepalive=[],
                    handshakes=[],
                )
            )
            # Interleaved rounds: machine noise (other work on the CPUs) hits every side.
            for _ in range(ROUNDS):
                for side in sides:
                    side.measure_round(material)
            for side in sides[:-1]:
                side.measure_memory(material)
            with nginx() as proc:
                ceiling = run_ab(
                    f"https://127.0.0.1:{nginx_port}/direct",
                    material,
                    keepalive=True,
                    server_pid=proc.pid,
                )
            with gateway("asyncio", 256 * 1024)() as proc:  # asyncio's default buffer
                naive_idle = idle_memory_per_connection(gateway_port, proc.pid, material)
            if FULL_APP:
                measure_full_app(folder, material, upstream_port)
    print()
    print(
        "| server | keep-alive req/s | keep-alive req per server CPU-s | p50 / p99 ms | "
        "full mTLS handshakes/s | handshakes per server CPU-s | RSS per idle conn | "
        "CPU server / ab (keep-alive) | CPU server / ab (handshakes) | failed |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for side in sides:
        print(_fmt(side, base))
    print(f"(medians of {ROUNDS} interleaved rounds of {SECONDS}s; ratios are x nginx)")
    print()
    print(
        f"ab ceiling (nginx answering /direct itself, keep-alive): {ceiling.rps:,.0f} req/s, "
        f"server CPU {ceiling.server_cpu:.0%}, ab CPU {ceiling.ab_cpu:.0%}"
    )
    print(
        f"gateway with asyncio's default 256 KiB TLS read buffer: "
        f"{naive_idle / 1024:.1f} KB per idle connection"
    )
    print("targets: keep-alive >= 0.25x, handshakes >= 0.8x, <= 60 KB per idle connection")


# --- the full application (gw-core's create_app, as `brokergate gateway serve` runs it) ----

FULL_APP = os.environ.get("BENCH_FULL_APP", "1") != "0"
SECRET = b"bench-secret-key-0123456789abcdef"


@dataclass(frozen=True, kw_only=True)
class FullAppSetup:
    store_url: str
    material: Material  # ca = root + issuing CA of our store; client = an issued broker cert


def make_full_app_setup(folder: Path, base: Material) -> FullAppSetup:
    """A SQLite store with our CA (generation 1) and one broker whose certificate ab uses."""
    from cryptography.hazmat.primitives.serialization import pkcs12
    from sqlalchemy import select

    from ca import CASettings, create_user, load_trust_material, make_authority
    from store import (
        OUTBOX_PURPOSE,
        MailOutbox,
        Sealer,
        make_engine,
        open_mail_secrets,
        session_factory,
        transaction,
        upgrade,
    )

    store_url = f"sqlite:///{folder / 'store.db'}"
    engine = make_engine(store_url)
    upgrade(engine)
    sessions = session_factory(engine)
    settings = CASettings(passphrase="bench", ca_key_type="ec-p256", leaf_key_type="ec-p256")
    authority = make_authority(settings=settings, sessions=sessions, secret_key=SECRET)
    authority.init("bench")
    now = datetime.now(UTC)
    with transaction(sessions) as session:
        user = create_user(
            session,
            broker_number="60/123/4567",
            email="erika@example.org",
            name="Erika Mustermann",
            now=now,
            actor="bench",
        )
    issued = authority.issue_certificate(user.id, "bench")
    with transaction(sessions) as session:
        row = session.scalars(select(MailOutbox).where(MailOutbox.kind == "certificate_password"))
        password = open_mail_secrets(
            next(iter(row)), Sealer(secret=SECRET, purpose=OUTBOX_PURPOSE)
        )["password"]
        trust = load_trust_material(session)
    engine.dispose()
    key, cert, _chain = pkcs12.load_key_and_certificates(issued.pkcs12, password.encode())
    assert key is not None and cert is not None
    ca_pem = "".join(pem(c) for c in [*trust.roots, *trust.issuing_by_generation.values()])
    broker = write_pem_files(folder, "broker", [cert], key)
    material = Material(
        ca=folder / "store-ca.pem",
        server_cert=base.server_cert,
        server_key=base.server_key,
        client_cert=broker.cert,
        client_key=broker.key,
        client_combined=folder / "broker-combined.pem",
    )
    material.ca.write_text(ca_pem)
    material.client_combined.write_bytes(pem(cert).encode() + key_pem(key))
    material.client_combined.chmod(0o600)
    return FullAppSetup(store_url=store_url, material=material)


def serve_full_app(spec: dict[str, object]) -> int:
    """The real application exactly as the CLI wires it (one asyncio worker)."""
    from gateway import (
        GatewaySettings,
        ServeOptions,
        gateway_app_factory,
        run_worker,
        ssl_context_factory,
        store_metrics_refresh,
    )

    settings = GatewaySettings(
        host="127.0.0.1",
        port=int(str(spec["port"])),
        server_cert=Path(str(spec["cert"])),
        server_key=Path(str(spec["key"])),
        upstream_url=str(spec["upstream"]),
        public_url=f"https://127.0.0.1:{spec['port']}",
        metrics_port=0,
    )
    store_url = str(spec["store_url"])
    tls_factory = ssl_context_factory(settings=settings, store_url=store_url)

    def tls() -> ssl.SSLContext | None:
        context = tls_factory()
        assert context is not None
        _tickets_as_nginx_sends_them(context)
        return context

    options = ServeOptions(host=settings.host, port=settings.port, workers=1, shutdown_grace=5)
    return run_worker(
        0,
        options,
        gateway_app_factory(settings=settings, store_url=store_url, secret_key=SECRET),
        tls,
        store_metrics_refresh(settings),
    )


def session_cookie(port: int, material: Material, server_ca: Path) -> str:
    """Log in once with the certificate (SSO) and return ``name=value`` of the session."""
    context = ssl.create_default_context(cafile=str(server_ca))
    context.check_hostname = False
    context.load_cert_chain(str(material.client_cert), str(material.client_key))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as conn:
            conn.sendall(
                b"GET /portal/start HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    if " 200 " not in head.splitlines()[0]:
        raise RuntimeError(f"certificate login failed: {head.splitlines()[0]}")
    for line in head.splitlines():
        if line.lower().startswith("set-cookie:") and "__Host-" in line:
            return line.split(":", 1)[1].strip().split(";", 1)[0]
    raise RuntimeError(f"no session cookie after the certificate login:\n{head}")


def measure_full_app(folder: Path, base: Material, upstream_port: int) -> None:
    """nginx (verifying our CA's chain) vs the full gateway app: keep-alive and handshakes."""
    setup = make_full_app_setup(folder / "full", base)
    material = setup.material
    nginx_port, gateway_port = free_port(), free_port()
    block = nginx_front_block(nginx_port, upstream_port, material)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    spec = {
        "port": gateway_port,
        "upstream": f"http://127.0.0.1:{upstream_port}",
        "cert": str(material.server_cert),
        "key": str(material.server_key),
        "store_url": setup.store_url,
    }
    command = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "bench.gateway_vs_nginx"]
    command += ["_full", json.dumps(spec)]
    results: dict[str, list[AbResult]] = {
        "nginx": [],
        "gateway": [],
        "nginx-h": [],
        "gateway-h": [],
    }
    for _ in range(ROUNDS):
        with running(nginx_command(folder / "full-nginx", block, SERVER_CPU), nginx_port,
                     folder / "full-nginx.log") as proc:  # fmt: skip
            url = f"https://127.0.0.1:{nginx_port}/portal/start"
            results["nginx"].append(run_ab(url, material, keepalive=True, server_pid=proc.pid))
            results["nginx-h"].append(run_ab(url, material, keepalive=False, server_pid=proc.pid))
        with running(command, gateway_port, folder / "full-gw.log", env) as proc:
            cookie = session_cookie(gateway_port, material, base.ca)
            url = f"https://127.0.0.1:{gateway_port}/portal/start"
            for keepalive, key in ((True, "gateway"), (False, "gateway-h")):
                results[key].append(
                    run_ab(
                        url,
                        material,
                        keepalive=keepalive,
                        server_pid=proc.pid,
                        extra=("-C", cookie),  # the session made by the certificate login
                    )
                )
    k_ratio = _rate(results["gateway"]) / _rate(results["nginx"])
    k_cpu = _per_cpu(results["gateway"]) / _per_cpu(results["nginx"])
    h_ratio = _rate(results["gateway-h"]) / _rate(results["nginx-h"])
    h_cpu = _per_cpu(results["gateway-h"]) / _per_cpu(results["nginx-h"])
    failed = sum(r.failed for rs in results.values() for r in rs)
    print()
    print("Full application (gw-core's create_app: certificate validated in code, session,")
    print("route policy, signed assertion; session cookie sent by ab -C; our CA's EC chain):")
    print(
        f"  keep-alive: gateway {_rate(results['gateway']):,.0f} req/s vs nginx "
        f"{_rate(results['nginx']):,.0f} = {k_ratio:.2f}x (per server CPU-s {k_cpu:.2f}x); "
        f"p50/p99 {_median([r.p50_ms for r in results['gateway']]):.0f}/"
        f"{_median([r.p99_ms for r in results['gateway']]):.0f} ms"
    )
    print(
        f"  full handshakes: gateway {_rate(results['gateway-h']):,.0f}/s vs nginx "
        f"{_rate(results['nginx-h']):,.0f}/s = {h_ratio:.2f}x (per server CPU-s {h_cpu:.2f}x)"
    )
    print(f"  failed or non-2xx requests: {failed}")


def main_full() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        folder = Path(tmp)
        material = make_material(folder)
        upstream_port = free_port()
        with running(
            nginx_command(folder / "upstream", upstream_block(upstream_port), LOAD_CPU),
            upstream_port,
            folder / "upstream.log",
        ):
            measure_full_app(folder, material, upstream_port)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_gateway":
        sys.exit(serve_gateway(json.loads(sys.argv[2])))
    if sys.argv[1:] == ["full"]:  # only the full-application comparison
        sys.exit(main_full())
    if len(sys.argv) == 3 and sys.argv[1] == "_full":
        sys.exit(serve_full_app(json.loads(sys.argv[2])))
    if len(sys.argv) == 3 and sys.argv[1] == "_hold":
        sys.exit(hold_connections(json.loads(sys.argv[2])))
    main()
