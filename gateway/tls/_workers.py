"""Serving: N worker processes on one port (SO_REUSEPORT), graceful drain on SIGTERM/SIGINT.

::

    serve(ServeOptions.from_settings(settings),
          app_factory=lambda tls, metrics: create_app(...),
          ssl_context_factory=lambda: create_server_context(...))

Process model: with ``workers == 1`` the calling process is the worker. Otherwise the
calling process is a supervisor that forks the workers, forwards SIGTERM/SIGINT to them
and waits. A worker that dies unexpectedly (a crash, the OOM killer, SIGKILL) is forked
again in its place, logged, and counted (``brokergate_worker_restarts_total`` on the new
worker's /metrics); the other workers serve on meanwhile and the port stays open. A slot
that keeps dying is restarted with a doubling delay (:func:`restart_delay`), and after
``CRASH_LOOP_LIMIT`` quick deaths in a row the supervisor gives up: it stops the others and
exits with an error, so the service manager (systemd, Kubernetes) sees it. Each worker
binds its own listening socket with SO_REUSEPORT and the kernel spreads new connections
across them. Workers are forked (not spawned) so the factories need not be picklable; the
supervisor runs no event loop and opens nothing before forking.

Each worker builds its own SSL context and app (OpenSSL and aiohttp state is per process)
and serves its own /metrics listener on ``metrics_port + worker index``.

Graceful shutdown (aiohttp ``AppRunner.cleanup``): the listening socket is closed first
(new connections go to the remaining workers or are refused), idle keep-alive
connections are closed, in-flight requests get up to ``shutdown_grace`` to finish, then
the app's cleanup_ctx closes the upstream pool and the store.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Literal

from aiohttp import web

from gateway._metrics import GatewayMetrics, metrics_app, start_metrics_listener
from gateway._networks import parse_networks
from gateway._settings import GatewaySettings
from gateway.tls._listener import ConnectionLimits, GatewaySite
from gateway.tls._proxy_protocol import ProxyProtocolSite

log = logging.getLogger("gateway.serve")

AppFactory = Callable[[ssl.SSLContext | None, GatewayMetrics], web.Application]
"""``app_factory(tls_context, metrics)`` → the gateway app (called once in each worker)."""
SSLContextFactory = Callable[[], ssl.SSLContext | None]
"""Builds the listener's context in each worker; None serves plain HTTP (terminator mode)."""
MetricsRefresh = Callable[[web.Application, GatewayMetrics], Callable[[], object] | None]
"""Given the started app and its metrics, the callable that refreshes the store gauges."""

# asyncio's SSLProtocol allocates (and zero-fills) a 256 KiB receive buffer per TLS
# connection (asyncio.sslproto.SSLProtocol.max_size): 1,000 idle brokers would pin
# 256 MB. 16 KiB is the largest TLS record's plaintext (RFC 8446 §5.1), so a read never
# needs more; bulk transfers merely take one more read call per record.
SSL_READ_BUFFER = 16 * 1024
LISTEN_BACKLOG = 1024  # aiohttp's default of 128 drops SYNs in a burst of new handshakes
_WORKER_EXIT_GRACE = 5.0  # extra seconds the supervisor waits beyond shutdown_grace
# Restarting a dead worker: at once the first time (a one-off kill must cost seconds, not
# a backoff), then doubling up to 30 s while the slot keeps dying within a minute of its
# start (a worker that cannot start must not fork in a tight loop); five quick deaths in a
# row mean it will not get better by itself: give up and let the service manager see it.
RESTART_FIRST_DELAY = 0.0
RESTART_BASE_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
QUICK_DEATH = 60.0  # seconds: a worker that lived longer than this starts a new count
CRASH_LOOP_LIMIT = 5


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    host: str
    port: int
    workers: int = 1
    shutdown_grace: float = 30.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0  # 0: no metrics listener
    event_loop: Literal["asyncio", "uvloop"] = "asyncio"
    ssl_read_buffer: int = SSL_READ_BUFFER
    proxy_protocol: bool = False  # connections start with a PROXY header (_proxy_protocol)
    trusted_proxies: tuple[str, ...] = ()  # who may send that header
    proxy_protocol_timeout: float = 3.0
    store_threads: int = 32  # threads for blocking store calls (asyncio.to_thread)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)  # _listener bounds

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.store_threads < 1:
            raise ValueError("store_threads must be at least 1")
        if self.shutdown_grace <= 0:
            raise ValueError("shutdown_grace must be positive")
        if self.proxy_protocol and not self.trusted_proxies:
            raise ValueError("proxy_protocol needs trusted_proxies")

    @classmethod
    def from_settings(
        cls, settings: GatewaySettings, *, workers: int | None = None
    ) -> ServeOptions:
        return cls(
            host=settings.host,
            port=settings.port,
            workers=workers if workers is not None else settings.workers,
            shutdown_grace=settings.shutdown_grace.total_seconds(),
            metrics_host=settings.metrics_host,
            metrics_port=settings.metrics_port,
            proxy_protocol=settings.proxy_protocol,
            trusted_proxies=settings.trusted_proxies,
            proxy_protocol_timeout=settings.proxy_protocol_timeout.total_seconds(),
            store_threads=settings.store_threads,
            limits=ConnectionLimits(
                max_connections=settings.max_connections,
                tls_handshake_timeout=settings.tls_handshake_timeout.total_seconds(),
                first_request_timeout=settings.first_request_timeout.total_seconds(),
                request_head_timeout=settings.request_head_timeout.total_seconds(),
                keepalive_timeout=settings.keepalive_timeout.total_seconds(),
            ),
        )


def limit_ssl_read_buffer(size: int = SSL_READ_BUFFER) -> None:
    """Shrink asyncio's per-connection TLS receive buffer for this process (see above)."""
    if size < 16 * 1024:
        raise ValueError("the TLS read buffer must hold one full record (16 KiB)")
    asyncio.sslproto.SSLProtocol.max_size = size


def serve(
    options: ServeOptions,
    *,
    app_factory: AppFactory,
    ssl_context_factory: SSLContextFactory,
    metrics_refresh: MetricsRefresh | None = None,
) -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the process exit code."""
    if options.workers == 1:
        return run_worker(0, options, app_factory, ssl_context_factory, metrics_refresh)
    return _supervise(options, app_factory, ssl_context_factory, metrics_refresh)


def restart_delay(quick_deaths: int) -> float:
    """Seconds before a worker slot is forked again after its ``quick_deaths``-th death in a
    row within ``QUICK_DEATH`` of its start (1: the first): 0, 1, 2, 4, … up to 30."""
    if quick_deaths <= 1:
        return RESTART_FIRST_DELAY
    return float(min(RESTART_MAX_DELAY, RESTART_BASE_DELAY * 2 ** (quick_deaths - 2)))


def run_worker(
    index: int,
    options: ServeOptions,
    app_factory: AppFactory,
    ssl_context_factory: SSLContextFactory,
    metrics_refresh: MetricsRefresh | None = None,
    *,
    restarts: int = 0,
) -> int:
    """One worker: serve until a signal, drain, return 0.

    ``restarts``: how often the supervisor has restarted this worker slot (for the metric).
    """
    limit_ssl_read_buffer(options.ssl_read_buffer)
    main = _worker_main(index, options, app_factory, ssl_context_factory, metrics_refresh, restarts)
    if options.event_loop == "uvloop":
        import uvloop  # optional: only imported when configured

        uvloop.run(main)
    else:
        asyncio.run(main)
    return 0


async def _worker_main(
    index: int,
    options: ServeOptions,
    app_factory: AppFactory,
    ssl_context_factory: SSLContextFactory,
    metrics_refresh: MetricsRefresh | None,
    restarts: int = 0,
) -> None:
    loop = asyncio.get_running_loop()
    # Every store call runs in asyncio.to_thread. asyncio's default pool has min(32, cores + 4)
    # threads (6 here): while SQLite is locked, six requests waiting on a write held every
    # thread and reads that WAL would serve at once queued behind them, past the busy timeout
    # (tests/faults/test_sqlite_locked.py). One thread per store connection instead.
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=options.store_threads, thread_name_prefix="gateway-store")
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = GatewayMetrics()
    metrics.record_worker_restarts(restarts)
    tls = ssl_context_factory()
    app = app_factory(tls, metrics)
    # access_log=None: a log line per request costs ~10 % of throughput and the upstream
    # keeps its own access log; handle_signals=False: we drain on our own signal handlers.
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=options.shutdown_grace
    )
    await runner.setup()
    metrics_runner: web.AppRunner | None = None
    try:
        site: web.BaseSite
        if options.proxy_protocol:  # behind an L4 balancer: PROXY header, then TLS
            site = ProxyProtocolSite(
                runner,
                options.host,
                options.port,
                ssl_context=tls,
                trusted_proxies=parse_networks(options.trusted_proxies),
                header_timeout=options.proxy_protocol_timeout,
                reuse_port=options.workers > 1,
                backlog=LISTEN_BACKLOG,
                limits=options.limits,
                count_close=metrics.record_connection_closed,
            )
        else:
            site = GatewaySite(
                runner,
                options.host,
                options.port,
                ssl_context=tls,
                limits=options.limits,
                count_close=metrics.record_connection_closed,
                reuse_port=options.workers > 1,
                backlog=LISTEN_BACKLOG,
            )
        await site.start()
        if options.metrics_port:
            refresh = metrics_refresh(app, metrics) if metrics_refresh else None
            metrics_runner = await start_metrics_listener(
                metrics_app(metrics, refresh=refresh),
                host=options.metrics_host,
                port=options.metrics_port + index,
            )
        log.info(
            "worker %d (pid %d) serving on %s:%d", index, os.getpid(), options.host, options.port
        )
        _status(f"worker {index} ready pid={os.getpid()}")
        await stop.wait()
        log.info("worker %d draining (up to %.0fs)", index, options.shutdown_grace)
        _status(f"worker {index} draining")
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()
    _status(f"worker {index} stopped")


def _status(line: str) -> None:
    """One status line on stderr in ONE write: print() writes the text and its newline
    separately, and the workers share stderr, so their lines could interleave."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _supervise(
    options: ServeOptions,
    app_factory: AppFactory,
    ssl_context_factory: SSLContextFactory,
    metrics_refresh: MetricsRefresh | None,
) -> int:
    context = multiprocessing.get_context("fork")
    stopping = False
    failed = False
    slots: dict[int, BaseProcess] = {}
    started_at: dict[int, float] = {}
    restarts = dict.fromkeys(range(options.workers), 0)
    quick_deaths = dict.fromkeys(range(options.workers), 0)
    due: dict[int, float] = {}  # slot → when its dead worker is forked again
    signals = {signal.SIGTERM, signal.SIGINT}

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in slots.values():
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    def start(index: int) -> None:
        # Block the signals while forking: one arriving meanwhile is held, not lost, and
        # the child starts with them blocked until it has restored the default handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            proc: BaseProcess = context.Process(
                target=_worker_entry,
                args=(index, options, app_factory, ssl_context_factory, metrics_refresh),
                kwargs={"restarts": restarts[index]},
                name=f"brokergate-gateway-{index}",
            )
            proc.start()
            slots[index] = proc
            started_at[index] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)

    def buried(index: int, proc: BaseProcess) -> None:
        """A worker died while nobody asked it to stop: restart it, or give up."""
        nonlocal failed
        lived = time.monotonic() - started_at[index]
        quick_deaths[index] = quick_deaths[index] + 1 if lived < QUICK_DEATH else 1
        if quick_deaths[index] > CRASH_LOOP_LIMIT:
            failed = True
            log.error(
                "worker %s exited with %s %d times in a row within %.0fs of its start; "
                "stopping the others",
                proc.name,
                proc.exitcode,
                quick_deaths[index],
                QUICK_DEATH,
            )
            request_stop(signal.SIGTERM, None)
            return
        restarts[index] += 1
        delay = restart_delay(quick_deaths[index])
        log.error(
            "worker %s (pid %s) exited with %s after %.0fs; restarting it in %.0fs "
            "(restart %d of this worker)",
            proc.name,
            proc.pid,
            proc.exitcode,
            lived,
            delay,
            restarts[index],
        )
        due[index] = time.monotonic() + delay

    previous = {s: signal.getsignal(s) for s in signals}
    try:
        for signum in signals:
            signal.signal(signum, request_stop)
        for index in range(options.workers):
            if not stopping:
                start(index)
        while not stopping:
            waiting = [p.sentinel for i, p in slots.items() if i not in due]
            multiprocessing.connection.wait(waiting, timeout=0.2)
            for index, proc in list(slots.items()):
                if stopping:
                    break
                if index not in due and not proc.is_alive():
                    proc.join()
                    buried(index, proc)
            for index, when in list(due.items()):
                if not stopping and time.monotonic() >= when:
                    del due[index]
                    start(index)
        deadline_each = options.shutdown_grace + _WORKER_EXIT_GRACE
        for index, proc in slots.items():
            if index in due:
                continue  # already dead, its restart cancelled
            proc.join(timeout=deadline_each)
            if proc.is_alive():
                log.error("worker %s did not stop in time; killing it", proc.name)
                proc.kill()
                proc.join()
        live = [proc for index, proc in slots.items() if index not in due]
        return 1 if failed or any(proc.exitcode != 0 for proc in live) else 0
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _worker_entry(
    index: int,
    options: ServeOptions,
    app_factory: AppFactory,
    ssl_context_factory: SSLContextFactory,
    metrics_refresh: MetricsRefresh | None,
    *,
    restarts: int = 0,
) -> None:
    # Forked with SIGTERM/SIGINT blocked (see _supervise): restore the defaults and unblock;
    # the worker's event loop installs its own handlers.
    signals = {signal.SIGTERM, signal.SIGINT}
    for signum in signals:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    sys.exit(
        run_worker(
            index, options, app_factory, ssl_context_factory, metrics_refresh, restarts=restarts
        )
    )
