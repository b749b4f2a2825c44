"""A real upstream portal stand-in and a minimal gateway app around the proxy (tests, bench).

The minimal gateway has only what the proxy needs: the upstream pool in cleanup_ctx, an
error middleware like gw-core's (GatewayError -> status + page key), and a catch-all
route that proxies with fixed identity headers. Run as a module it serves the minimal
gateway in its own process (for memory measurements):

    python -m tests.gateway_proxy._apps UPSTREAM_URL PORT_FILE
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from pathlib import Path

from aiohttp import WSMsgType, web

from gateway._errors import GatewayError
from gateway._metrics import GatewayMetrics
from gateway._settings import GatewaySettings
from gateway.auth._terminator import forwarded_certificate_headers
from gateway.proxy._reverse_proxy import proxy_request
from gateway.proxy._upstream import UPSTREAM_KEY, upstream_context
from gateway.tls._workers import ServeOptions, serve

CHUNK = b"\x5a" * 65536


# --- the upstream -------------------------------------------------------------------------


async def echo(request: web.Request) -> web.Response:
    """Method, target, every header (in order, duplicates kept) and a digest of the body."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return web.json_response(
        {
            "method": request.method,
            "path_qs": request.raw_path,
            "headers": list(request.headers.items()),
            "body_sha256": digest.hexdigest(),
            "body_size": size,
        }
    )


async def download(request: web.Request) -> web.StreamResponse:
    size = int(request.query["size"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if request.query.get("length") == "1":
        response.content_length = size
    await response.prepare(request)
    sent = 0 if request.method != "HEAD" else size
    while sent < size:
        piece = CHUNK[: min(len(CHUNK), size - sent)]
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


GATEWAY_COOKIE_ATTEMPTS = (
    "__Host-brokergate=fixated; Path=/; Secure",
    "__Host-bg-device=fixated; Path=/; Secure",
    "__Host-portalsso=fixated; Path=/; Secure",
    "portal=ok; Path=/",
)


async def set_gateway_cookies(request: web.Request) -> web.StreamResponse:
    """An upstream trying to set the gateway's own cookies (session fixation)."""
    if request.query.get("stream"):
        response = web.StreamResponse()  # chunked: the streamed path of the proxy
        for value in GATEWAY_COOKIE_ATTEMPTS:
            response.headers.add("Set-Cookie", value)
        await response.prepare(request)
        await response.write(b"streamed")
        await response.write_eof()
        return response
    small = web.Response(text="small")
    for value in GATEWAY_COOKIE_ATTEMPTS:
        small.headers.add("Set-Cookie", value)
    return small


async def redirect(request: web.Request) -> web.Response:
    response = web.Response(status=302, headers={"Location": "/elsewhere?x=%2F"})
    response.headers.add("Set-Cookie", "portal=abc; Path=/; HttpOnly")
    response.headers.add("Set-Cookie", "lang=de; Path=/")
    response.headers["Keep-Alive"] = "timeout=5"
    response.headers["Connection"] = "X-Upstream-Private"
    response.headers["X-Upstream-Private"] = "hop"
    return response


SLOW_STARTED = web.AppKey("slow_started", list[float])


async def slow(request: web.Request) -> web.Response:
    request.app[SLOW_STARTED].append(float(request.query.get("delay", "1")))
    await asyncio.sleep(float(request.query.get("delay", "1")))
    return web.Response(text="slow done")


async def stall_body(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    if request.query.get("known") == "1":
        response.content_length = 100  # small and known: the proxy reads it whole
    await response.prepare(request)
    await response.write(b"x" * 10)
    await asyncio.sleep(30)
    return response


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat.v1",))
    await ws.prepare(request)
    await ws.send_str(json.dumps({"headers": dict(request.headers), "protocol": ws.ws_protocol}))
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            if message.data == "close-4001":
                await ws.close(code=4001, message=b"bye")
                break
            await ws.send_str("echo:" + message.data)
        elif message.type is WSMsgType.BINARY:
            await ws.send_bytes(message.data[::-1])
    return ws


def upstream_app() -> web.Application:
    app = web.Application(client_max_size=0)
    app[SLOW_STARTED] = []
    app.router.add_route("*", "/echo{tail:.*}", echo)
    app.router.add_get("/download", download)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/set-gateway-cookies", set_gateway_cookies)
    app.router.add_get("/slow", slow)
    app.router.add_get("/stall-body", stall_body)
    app.router.add_get("/ws", websocket)
    return app


# --- the minimal gateway ------------------------------------------------------------------

IDENTITY = {"X-Brokergate-User-Id": "42", "X-Brokergate-Level": "strong"}


@web.middleware
async def error_pages(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return web.Response(status=exc.status, text=f"page:{exc.page}")


def gateway_app(
    settings: GatewaySettings,
    *,
    identity: Mapping[str, str] = IDENTITY,
    metrics: GatewayMetrics | None = None,
) -> web.Application:
    trusted = settings.trusted_networks
    strip = forwarded_certificate_headers(settings)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await proxy_request(
            request,
            upstream=request.app[UPSTREAM_KEY],
            identity_headers=identity,
            trusted_proxies=trusted,
            strip_headers=strip,
            gateway_cookies=(settings.session_cookie_name,),
            metrics=metrics,
        )

    app = web.Application(middlewares=[error_pages], client_max_size=0)
    app.cleanup_ctx.append(upstream_context(settings))
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def settings_for(upstream_url: str, **overrides: object) -> GatewaySettings:
    values: dict[str, object] = {
        "upstream_url": upstream_url,
        "upstream_connect_timeout": timedelta(seconds=2),
        "upstream_read_timeout": timedelta(seconds=5),
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


def serve_minimal(argv: list[str]) -> int:
    """``serve`` with the minimal gateway: UPSTREAM PORT WORKERS METRICS_PORT [CERT KEY]
    [--uvloop] [--proxy-protocol] (PROXY headers believed from 127.0.0.1)."""
    flags = {arg for arg in argv if arg.startswith("--")}
    argv = [arg for arg in argv if not arg.startswith("--")]
    upstream, port, workers, metrics_port = argv[:4]
    cert_key = argv[4:6]
    trusted = ("127.0.0.1/32",) if "--proxy-protocol" in flags else ()
    # The drain tests keep a slow request in flight for several seconds.
    settings = settings_for(
        upstream, upstream_read_timeout=timedelta(seconds=30), trusted_proxies=trusted
    )

    def tls() -> ssl.SSLContext | None:
        if not cert_key:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_key[0], cert_key[1])
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cert_key[0])
        return context

    options = ServeOptions(
        host="127.0.0.1",
        port=int(port),
        workers=int(workers),
        shutdown_grace=10,
        metrics_port=int(metrics_port),
        event_loop="uvloop" if "--uvloop" in flags else "asyncio",
        proxy_protocol="--proxy-protocol" in flags,
        trusted_proxies=trusted,
    )
    return serve(
        options,
        app_factory=lambda _tls, metrics: gateway_app(settings, metrics=metrics),
        ssl_context_factory=tls,
    )


async def _serve_forever(upstream_url: str, port_file: Path) -> None:
    runner = web.AppRunner(gateway_app(settings_for(upstream_url)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    port_file.write_text(str(port))  # noqa: ASYNC240 (once, at start-up)
    await asyncio.Event().wait()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        sys.exit(serve_minimal(sys.argv[2:]))
    asyncio.run(_serve_forever(sys.argv[1], Path(sys.argv[2])))
