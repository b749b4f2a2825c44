"""Client helpers for the gateway tests: raw HTTP over real TLS (no client-side path cleaning)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

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


async def eventually(
    probe: Callable[[], Awaitable[RawResponse]],
    done: Callable[[RawResponse], bool],
    *,
    within: float = 5.0,
    interval: float = 0.05,
) -> tuple[RawResponse, float]:
    """Repeat ``probe`` until ``done`` (bounded); returns the last response and seconds taken."""
    start = time.monotonic()
    response = await probe()
    for _ in range(int(within / interval)):
        if done(response) or time.monotonic() - start > within:
            break
        await asyncio.sleep(interval)
        response = await probe()
    return response, time.monotonic() - start


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
