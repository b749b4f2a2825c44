"""Helpers of the gateway tests: raw HTTP over real TLS (no client-side path cleaning), and a
real upstream with a WebSocket echo that records how its leg ended."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

from aiohttp import WSMsgType, web

from tests.gateway.conftest import ClientCert


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: str
    session_reused: bool = False
    cookies: dict[str, str] = field(default_factory=dict)
    body_bytes: bytes = b""

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def echoed(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for name, value in json.loads(self.body)["headers"]:
            result.setdefault(name.lower(), []).append(value)
        return result


def client_context(server_ca: Path, cert: ClientCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server_ca))
    if cert is not None:
        context.load_cert_chain(str(cert.cert_path), str(cert.key_path))
    return context


async def raw_request(
    url: str,
    target: str,
    *,
    context: ssl.SSLContext,
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    session: ssl.SSLSession | None = None,
    sessions_out: list[ssl.SSLSession] | None = None,
) -> RawResponse:
    """One HTTP/1.1 request with the target sent byte for byte as given."""
    host, port = url.removeprefix("https://").split(":")
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            host, int(port), ssl=context, server_hostname=host, ssl_handshake_timeout=10
        ),
        10,
    )
    ssl_object = writer.get_extra_info("ssl_object")
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers or []]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        if sessions_out is not None and ssl_object.session is not None:
            sessions_out.append(ssl_object.session)
        reused = bool(ssl_object.session_reused)
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = [tuple(h.split(": ", 1)) for h in header_lines]
    result = RawResponse(
        status=int(status_line.split()[1]), headers=parsed, body="", session_reused=reused
    )  # type: ignore[arg-type]
    if any(k.lower() == "transfer-encoding" and "chunked" in v for k, v in result.headers):
        out, data = b"", rest
        while data:
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, data = out + data[:size], data[size + 2 :]
        rest = out
    result.body = rest.decode("utf-8", "replace")
    result.body_bytes = rest
    for value in result.header("Set-Cookie"):
        cookie = SimpleCookie()
        cookie.load(value)
        for name, morsel in cookie.items():
            result.cookies[name] = morsel.value
    return result


async def run_tool(*args: str, stdin: bytes = b"", limit: float = 30) -> tuple[int, str, str]:
    """Run a real client (openssl, curl) without blocking the event loop the gateway runs on."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), limit)
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# --- an upstream with a WebSocket echo (the WebSocket guard's tests, in aiohttp and Chromium)

UpstreamCloses = asyncio.Queue[int | None]
UPSTREAM_CLOSES = web.AppKey("upstream_closes", UpstreamCloses)


async def _ws_echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_str(json.dumps({"level": request.headers.get("X-Brokergate-Level")}))
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            await ws.send_str("echo:" + message.data)
    request.app[UPSTREAM_CLOSES].put_nowait(ws.close_code)  # how the gateway ended our leg
    return ws


async def _json_echo(request: web.Request) -> web.Response:
    return web.json_response({"path": request.raw_path, "headers": list(request.headers.items())})


@asynccontextmanager
async def websocket_upstream(
    closes: UpstreamCloses, *, pages: Mapping[str, str] | None = None
) -> AsyncIterator[str]:
    """A real upstream on 127.0.0.1 (yields its URL): a WebSocket echo at ``/ws`` and
    ``/feed/ws`` (it first sends ``{"level": …}`` as the gateway told it, then echoes
    ``echo:<text>``, and puts its close code into ``closes`` when its leg ends), the HTML
    ``pages`` (path → document), and a JSON echo of path and headers everywhere else."""
    app = web.Application()
    app[UPSTREAM_CLOSES] = closes
    app.router.add_get("/ws", _ws_echo)
    app.router.add_get("/feed/ws", _ws_echo)  # an inactivity-exempt path in one test
    for path, html in (pages or {}).items():
        app.router.add_get(path, _page(html))
    app.router.add_route("*", "/{tail:.*}", _json_echo)  # last: the router matches in order
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _page(html: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html", charset="utf-8")

    return handler
