"""``brokergate ca serve``: the signer, HTTP over a Unix socket (issue 12).

Protocol (JSON bodies, one socket, mode 0660, group ``signer.socket_group``):

* ``POST /v1/issue`` ``{"request_id", "user_id", "session_id", "client_addr"}`` →
  200 with :class:`ca.SignerAnswer` as JSON (``issued`` or ``refused``); 400 for a malformed
  request; 503 when the store or the key cannot be used (nothing was written).
* ``GET /v1/health`` → 200 ``{"ok": true}``.
* ``GET /metrics`` → the Prometheus metrics (``ca/_signer_metrics.py``); also on
  ``signer.metrics_port`` (loopback, a listener of its own without the issue route).

The file permissions are the authentication: only the signer's own user and the group it
names (the gateway's) can connect. SIGTERM stops accepting, lets in-flight requests finish
(each is one transaction) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import logging
import os
import signal
import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from ca._errors import CAError, SignerSocketInUse
from ca._signer import IssueRequest, Signer
from ca._signer_metrics import SignerMetrics

log = logging.getLogger("brokergate.signer")

SIGNER = web.AppKey("signer", Signer)
METRICS = web.AppKey("signer_metrics", SignerMetrics)
SOCKET_MODE = 0o660  # SECURITY: owner (the signer) and group (the gateway) only
MAX_BODY = 4096  # an issue request is a few hundred bytes
SHUTDOWN_GRACE = 30.0  # seconds in-flight requests get after SIGTERM (an issuance takes ms)
CLEANUP_INTERVAL = 60.0  # seconds between housekeeping rounds (CRLs, old requests)


async def _issue(request: web.Request) -> web.Response:
    signer = request.app[SIGNER]
    try:
        wanted = IssueRequest.from_json(json.loads(await request.read()))
    except ValueError as exc:  # JSONDecodeError is a ValueError
        return web.json_response({"error": str(exc)}, status=400)
    metrics = request.app[METRICS]
    try:
        answer = await asyncio.to_thread(signer.issue, wanted)
    except (SQLAlchemyError, CAError) as exc:
        # The transaction rolled back: nothing half-issued. The gateway may retry.
        log.error("signer: request %s failed: %s", wanted.request_id, type(exc).__name__)
        metrics.requests.labels(outcome="unavailable").inc()
        return web.json_response({"error": "unavailable"}, status=503)
    metrics.requests.labels(outcome="replayed" if answer.replayed else answer.outcome).inc()
    log.info(
        "signer: request %s user %s: %s%s%s",
        wanted.request_id,
        wanted.user_id,
        answer.outcome,
        f" ({answer.reason})" if answer.reason else "",
        " (replayed)" if answer.replayed else "",
    )
    return web.json_response(answer.to_json())


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


def metrics_app(metrics: SignerMetrics) -> web.Application:
    """``/metrics`` alone, for ``signer.metrics_port`` (no issue route on TCP)."""
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get("/metrics", _metrics)
    return app


def signer_app(signer: Signer, metrics: SignerMetrics | None = None) -> web.Application:
    """The signer's aiohttp application (routes above). Rate refusals count into
    ``metrics`` (one is made if not given; ``app[METRICS]``)."""
    metrics = metrics or SignerMetrics()
    signer.on_rate_refusal = metrics.rate_refusal
    app = web.Application(client_max_size=MAX_BODY)
    app[SIGNER] = signer
    app[METRICS] = metrics
    app.router.add_post("/v1/issue", _issue)
    app.router.add_get("/v1/health", _health)
    app.router.add_get("/metrics", _metrics)

    async def housekeeping(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    await asyncio.to_thread(signer.housekeeping)
                except (SQLAlchemyError, CAError) as exc:
                    log.warning("signer: housekeeping failed: %s", type(exc).__name__)
                await asyncio.sleep(CLEANUP_INTERVAL)

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(housekeeping)
    return app


def bind_socket(path: Path, *, group: str = "") -> socket.socket:
    """A listening Unix socket at ``path`` with mode 0660 (and ``group``), never wider.

    A stale socket file (no one listening) is replaced; a live one is refused.

    Raises:
        SignerSocketInUse: another signer answers on ``path``.
        KeyError: ``group`` does not exist.
    """
    gid = grp.getgrnam(group).gr_gid if group else -1
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SignerSocketInUse(path, "it is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: the previous signer died without removing it
        else:
            raise SignerSocketInUse(path, "another signer is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # SECURITY: the umask makes the socket 0660 from its first moment (no window between
    # bind and chmod in which anyone could connect).
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, SOCKET_MODE)
    if gid != -1:
        os.chown(path, -1, gid)
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def run_signer(
    app: web.Application,
    sock: socket.socket,
    *,
    ready: Callable[[], None] = lambda: None,
    stop: asyncio.Event | None = None,
    metrics_port: int = 0,
) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM/SIGINT (or ``stop``), then drain and return.

    The caller owns ``sock``'s path (it removes the file afterwards).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_GRACE, handle_signals=False)
    await runner.setup()
    metrics_runner: web.AppRunner | None = None
    try:
        await web.SockSite(runner, sock).start()
        if metrics_port:
            metrics_runner = web.AppRunner(metrics_app(app[METRICS]), handle_signals=False)
            await metrics_runner.setup()
            await web.TCPSite(metrics_runner, "127.0.0.1", metrics_port).start()
        ready()
        await stop.wait()
        log.info("signer: stopping; finishing in-flight requests")
    finally:
        # Stops accepting, then waits for running handlers (each one transaction).
        await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
