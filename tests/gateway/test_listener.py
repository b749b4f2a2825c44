"""The HTTPS listener's bounds (issue 17, item 3), with real TLS sockets on loopback.

Each test injects short bounds (fractions of a second) and asserts that the connection is
closed within them, and by which reason the gateway counted; nothing sleeps to wait for a
bound to pass (the reads wait for the server's close, bounded by ``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from gateway._metrics import GatewayMetrics
from gateway.tls import CLOSE_REASONS, ConnectionLimits, GatewayServer, GatewaySite
from tests.gateway.conftest import ServerTLS

SLACK = 2.0  # seconds a close may come after its bound on a loaded test machine


@dataclass
class Listener:
    port: int
    server: GatewayServer
    client_context: ssl.SSLContext
    closes: list[str] = field(default_factory=list)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.client_context, server_hostname="127.0.0.1"
        )


StartListener = Callable[..., Awaitable[Listener]]


async def _hello(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(text=f"hello {len(body)}")


@pytest.fixture
async def start_listener(server_tls: ServerTLS) -> AsyncIterator[StartListener]:
    runners: list[web.AppRunner] = []

    async def start(**limits: float) -> Listener:
        app = web.Application()
        app.router.add_route("*", "/", _hello)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(server_tls.cert, server_tls.key)
        client_context = ssl.create_default_context(cafile=str(server_tls.ca))
        closes: list[str] = []
        site = GatewaySite(
            runner,
            "127.0.0.1",
            0,
            ssl_context=server_context,
            limits=ConnectionLimits(**limits),  # type: ignore[arg-type]
            count_close=closes.append,
        )
        await site.start()
        server = site._server
        assert isinstance(server, GatewayServer)
        return Listener(port=site.port, server=server, client_context=client_context, closes=closes)

    yield start
    for runner in runners:
        await runner.cleanup()


async def _closed_after(reader: asyncio.StreamReader, bound: float) -> float:
    """Seconds until the server closes the connection (read EOF or reset), at most the
    bound plus slack."""
    started = time.monotonic()
    async with asyncio.timeout(bound + SLACK):
        try:
            while await reader.read(1024):
                pass
        except (ConnectionResetError, ssl.SSLError):
            pass
    return time.monotonic() - started


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return await reader.readexactly(length)


async def test_an_idle_tls_connection_is_closed_within_first_request_timeout(
    start_listener: StartListener,
) -> None:
    listener = await start_listener(first_request_timeout=0.3, request_head_timeout=5)
    reader, writer = await listener.connect()  # the handshake completes: TLS is fine
    took = await _closed_after(reader, 0.3)
    writer.close()
    assert 0.25 <= took < 0.3 + SLACK
    assert listener.closes == ["first_request_timeout"]


async def test_slow_header_connections_are_closed_within_request_head_timeout(
    start_listener: StartListener,
) -> None:
    listener = await start_listener(first_request_timeout=5, request_head_timeout=0.5)
    connections = [await listener.connect() for _ in range(20)]
    started = time.monotonic()
    for _, writer in connections:
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    async def trickle(writer: asyncio.StreamWriter) -> None:
        # The attack itself: a header line every 0.1 s, never the blank line.
        for number in range(100):
            if writer.is_closing():
                return
            writer.write(b"X-Slow-%d: 1\r\n" % number)
            await asyncio.sleep(0.1)

    tricklers = [asyncio.create_task(trickle(writer)) for _, writer in connections]
    try:
        await asyncio.gather(*(_closed_after(reader, 0.5) for reader, _ in connections))
    finally:
        for task in tricklers:
            task.cancel()
        for _, writer in connections:
            writer.close()
    assert time.monotonic() - started < 0.5 + SLACK
    assert listener.closes == ["request_head_timeout"] * 20
    assert listener.server.open_connections == 0


async def test_a_request_is_served_and_the_idle_keepalive_connection_closed_after(
    start_listener: StartListener,
) -> None:
    listener = await start_listener(
        first_request_timeout=5, request_head_timeout=5, keepalive_timeout=0.3
    )
    reader, writer = await listener.connect()
    assert await _get(reader, writer) == b"hello 0"
    assert await _get(reader, writer) == b"hello 0"  # kept alive between requests
    # A head split over several writes is one request, not an attack.
    writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r")
    await writer.drain()
    writer.write(b"\n\r\nabc")
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(len(b"hello 3")) == b"hello 3"
    took = await _closed_after(reader, 0.3)
    writer.close()
    assert 0.25 <= took < 0.3 + SLACK
    assert listener.closes == ["keepalive_timeout"]


async def test_a_connection_that_never_starts_tls_is_closed_within_the_handshake_bound(
    start_listener: StartListener,
) -> None:
    listener = await start_listener(tls_handshake_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)  # plain TCP
    took = await _closed_after(reader, 0.3)
    writer.close()
    assert 0.25 <= took < 0.3 + SLACK
    assert listener.closes == ["tls_handshake_timeout"]
    assert listener.server.open_connections == 0


async def test_a_failed_handshake_is_counted_and_frees_its_slot(
    start_listener: StartListener,
) -> None:
    listener = await start_listener()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")  # HTTP where a ClientHello belongs
    await _closed_after(reader, 1)
    writer.close()
    assert listener.closes == ["tls_handshake_failed"]
    assert listener.server.open_connections == 0


async def test_connections_beyond_max_connections_wait_until_a_slot_frees(
    start_listener: StartListener,
) -> None:
    listener = await start_listener(max_connections=2, first_request_timeout=30)
    first = await listener.connect()
    second = await listener.connect()
    assert listener.server.open_connections == 2
    third = asyncio.create_task(listener.connect())
    done, _ = await asyncio.wait({third}, timeout=0.5)  # not accepted: no handshake
    assert not done
    assert listener.server.open_connections == 2
    first[1].close()  # a slot frees: the queued connection is accepted and served
    async with asyncio.timeout(5):
        reader, writer = await third
    assert await _get(reader, writer) == b"hello 0"
    assert listener.server.open_connections == 2
    for _, w in (second, (reader, writer)):
        w.close()


def test_every_close_reason_is_a_metric_label() -> None:
    metrics = GatewayMetrics()
    for reason in CLOSE_REASONS:
        metrics.record_connection_closed(reason)
    text = metrics.render()[0].decode()
    assert 'brokergate_connections_closed_total{reason="request_head_timeout"} 1.0' in text
    with pytest.raises(ValueError, match="not a known label"):
        metrics.record_connection_closed("bored")


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_connections": 0}, "max_connections must be at least 1"),
        ({"request_head_timeout": 0}, "request_head_timeout must be longer than 0s"),
        ({"tls_handshake_timeout": -1}, "tls_handshake_timeout must be longer than 0s"),
    ],
)
def test_limits_are_checked(limits: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectionLimits(**limits)  # type: ignore[arg-type]
