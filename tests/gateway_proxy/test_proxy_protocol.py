"""The PROXY protocol listener: real TLS on loopback, a real upstream, the minimal gateway.

The client (``_proxy_client.proxied_request``) does what HAProxy's ``send-proxy-v2`` does.
Connections it makes come from 127.0.0.1 (the "balancer") unless a test picks 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import json
import logging
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
import uvloop
from aiohttp import web

from gateway._networks import parse_networks
from gateway._settings import GatewaySettings
from gateway.tls._proxy_protocol import PROXY_PEERNAME, ProxyProtocolSite
from gateway.tls._trusted_peers import client_address, is_trusted_peer, peer_text
from gateway.tls._workers import SSL_READ_BUFFER, ServeOptions, limit_ssl_read_buffer
from tests.gateway_proxy._apps import gateway_app, settings_for, upstream_app
from tests.gateway_proxy._certs import PemPair
from tests.gateway_proxy._proxy_client import (
    V2_SIGNATURE,
    ClosedBeforeTLS,
    proxied_request,
    v1_header,
    v2_header,
    v2_local,
)
from tests.gateway_proxy.conftest import start_site

BALANCER = ("127.0.0.1/32",)
LOG = "gateway.proxy_protocol"

StartProxied = Callable[..., Awaitable[int]]


@pytest.fixture
def client_tls(server_pem: PemPair) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server_pem.cert))


@pytest.fixture
def server_tls(server_pem: PemPair) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_pem.cert, server_pem.key)
    return context


@pytest.fixture
async def start_proxied(
    upstream_url: str, server_tls: ssl.SSLContext
) -> AsyncIterator[StartProxied]:
    """``await start_proxied(app=None, trusted=BALANCER, header_timeout=3.0)`` → port of a PROXY
    protocol listener with TLS in front of ``app`` (default: the minimal gateway)."""
    runners: list[web.AppRunner] = []

    async def start(
        app: web.Application | None = None,
        *,
        trusted: tuple[str, ...] = BALANCER,
        header_timeout: float = 3.0,
    ) -> int:
        runner = web.AppRunner(
            app or gateway_app(settings_for(upstream_url, trusted_proxies=trusted)),
            access_log=None,
            shutdown_timeout=0.5,
        )
        await runner.setup()
        runners.append(runner)
        site = ProxyProtocolSite(
            runner,
            "127.0.0.1",
            0,
            ssl_context=server_tls,
            trusted_proxies=parse_networks(trusted),
            header_timeout=header_timeout,
        )
        await site.start()
        return site.port

    yield start
    for runner in runners:
        await runner.cleanup()


# --- the client's address reaches the upstream


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (v2_header("203.0.113.7", 50123), "203.0.113.7"),
        (v2_header("2001:db8::7", 50123), "2001:db8::7"),
        (v1_header("198.51.100.23", 4711), "198.51.100.23"),
        (v1_header("2001:db8:0:0::23", 4711), "2001:db8::23"),
        (v2_header("::ffff:192.0.2.5", 1), "192.0.2.5"),  # dual-stack balancer, IPv4 client
    ],
    ids=["v2-ipv4", "v2-ipv6", "v1-ipv4", "v1-ipv6", "v2-mapped"],
)
async def test_the_upstream_sees_the_client_address(
    start_proxied: StartProxied, client_tls: ssl.SSLContext, header: bytes, client: str
) -> None:
    port = await start_proxied()
    response = await proxied_request(port, header, context=client_tls)
    assert response.status == 200, response.body
    assert response.echoed()["x-forwarded-for"] == [client]


async def test_a_client_cannot_plant_an_address_behind_the_balancer(
    start_proxied: StartProxied, client_tls: ssl.SSLContext
) -> None:
    """SECURITY: the balancer is trusted for the PROXY header only; the HTTP headers come
    from the client (untrusted), so its X-Forwarded-* are replaced, not appended to."""
    port = await start_proxied()
    forged = [("X-Forwarded-For", "10.9.9.9"), ("X-Forwarded-Proto", "http")]
    response = await proxied_request(
        port, v2_header("203.0.113.7", 1), context=client_tls, headers=forged
    )
    seen = response.echoed()
    assert seen["x-forwarded-for"] == ["203.0.113.7"]
    assert seen["x-forwarded-proto"] == ["https"]


async def test_the_address_functions_agree_on_the_client(
    start_proxied: StartProxied, client_tls: ssl.SSLContext
) -> None:
    """request.remote, peer_text (X-Forwarded-For), client_address (login throttling and
    login records) and the trust check all see the client; the balancer stays visible."""
    networks = parse_networks(BALANCER)

    async def where(request: web.Request) -> web.Response:
        transport = request.transport
        assert transport is not None
        return web.json_response(
            {
                "headers": [],
                "remote": request.remote,
                "peer_text": peer_text(request),
                "client_address": client_address(request, parse_networks(BALANCER)),
                "trusted": is_trusted_peer(request, networks),
                "balancer": transport.get_extra_info(PROXY_PEERNAME)[0],
                "tls": transport.get_extra_info("ssl_object") is not None,
            }
        )

    app = web.Application()
    app.router.add_get("/where", where)
    port = await start_proxied(app)
    forged = [("X-Forwarded-For", "10.9.9.9")]
    response = await proxied_request(
        port, v2_header("203.0.113.7", 1), context=client_tls, target="/where", headers=forged
    )
    seen: dict[str, Any] = json.loads(response.body)
    assert seen["remote"] == seen["peer_text"] == seen["client_address"] == "203.0.113.7"
    assert seen["trusted"] is False and seen["balancer"] == "127.0.0.1" and seen["tls"]


async def test_the_tls_read_buffer_stays_at_16_kib(
    start_proxied: StartProxied, client_tls: ssl.SSLContext
) -> None:
    """The TLS transport is asyncio's own, so gateway.tls._workers's 16 KiB limit applies."""
    before = asyncio.sslproto.SSLProtocol.max_size
    limit_ssl_read_buffer()

    async def buffer(request: web.Request) -> web.Response:
        proxied: Any = request.transport
        size = len(proxied._transport._ssl_protocol._ssl_buffer)  # asyncio internals
        return web.json_response({"size": size})

    try:
        app = web.Application()
        app.router.add_get("/buffer", buffer)
        port = await start_proxied(app)
        response = await proxied_request(
            port, v2_header("203.0.113.7", 1), context=client_tls, target="/buffer"
        )
        assert json.loads(response.body) == {"size": SSL_READ_BUFFER}
    finally:
        asyncio.sslproto.SSLProtocol.max_size = before


@pytest.mark.parametrize("header", [v2_local(), b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN x y\r\n"])
async def test_local_and_unknown_keep_the_peer_address(
    start_proxied: StartProxied, client_tls: ssl.SSLContext, header: bytes
) -> None:
    """Health checks (v2 LOCAL) and PROXY UNKNOWN: the connection's own peer counts."""
    port = await start_proxied()
    response = await proxied_request(port, header, context=client_tls)
    assert response.status == 200
    assert response.echoed()["x-forwarded-for"] == ["127.0.0.1"]


async def test_header_and_hello_in_separate_slow_pieces(
    start_proxied: StartProxied, client_tls: ssl.SSLContext
) -> None:
    """The header may arrive in pieces (within the timeout), the ClientHello separately."""
    port = await start_proxied(header_timeout=5)
    header = v2_header("203.0.113.8", 1)
    pieces = [header[:5], header[5:14], header[14:20], header[20:]]
    response = await proxied_request(port, pieces, context=client_tls, coalesce=False, pause=0.05)
    assert response.echoed()["x-forwarded-for"] == ["203.0.113.8"]
    line = v1_header("203.0.113.9", 2)
    response = await proxied_request(
        port, [line[:3], line[3:20], line[20:-1], line[-1:]], context=client_tls, pause=0.05
    )
    assert response.echoed()["x-forwarded-for"] == ["203.0.113.9"]


async def test_v2_tlvs_are_skipped(start_proxied: StartProxied, client_tls: ssl.SSLContext) -> None:
    port = await start_proxied()
    tlvs = b"\x05" + struct.pack("!H", 6) + b"abcdef" + b"\x04" + struct.pack("!H", 0)
    header = v2_header("203.0.113.10", 1, tlvs=tlvs)  # UNIQUE_ID and NOOP
    response = await proxied_request(port, header, context=client_tls)
    assert response.echoed()["x-forwarded-for"] == ["203.0.113.10"]


# --- refused before TLS, with one log line


async def test_a_peer_outside_trusted_proxies_is_closed_before_tls(
    start_proxied: StartProxied, client_tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start_proxied()
    caplog.set_level(logging.WARNING, LOG)
    with pytest.raises(ClosedBeforeTLS):
        await proxied_request(
            port, v2_header("203.0.113.7", 1), context=client_tls, source="127.0.0.2"
        )
    (record,) = [r for r in caplog.records if r.name == LOG]
    assert "127.0.0.2" in record.getMessage()
    assert "not in gateway.trusted_proxies" in record.getMessage()


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        (b"", "TLS ClientHello, not a PROXY header"),  # no header at all
        (b"GET / HTTP/1.1\r\n\r\n", "does not start with a PROXY header"),
        (b"PROXY TCP4 203.0.113.7 127.0.0.1 99999 443\r\n", "port"),
        (b"PROXY TCP4 203.0.113.7 127.0.0.1 1 443\n", "LF without CR"),
        (b"PROXY TCP4 " + b"1" * 100, "without CRLF in 107 bytes"),
        (V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12), "version other than 2"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "at most"),  # oversized
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "shorter than its address block"),
    ],
    ids=["tls", "http", "port", "lf", "long-v1", "v3", "oversized", "short-block"],
)
async def test_a_bad_header_is_closed_before_tls(
    start_proxied: StartProxied,
    client_tls: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
    prefix: bytes,
    problem: str,
) -> None:
    port = await start_proxied()
    caplog.set_level(logging.WARNING, LOG)
    with pytest.raises(ClosedBeforeTLS):
        await proxied_request(port, prefix, context=client_tls, coalesce=bool(prefix))
    (record,) = [r for r in caplog.records if r.name == LOG]
    assert problem in record.getMessage() and "127.0.0.1" in record.getMessage()


async def test_a_truncated_header_is_closed_after_the_timeout(
    start_proxied: StartProxied, client_tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start_proxied(header_timeout=0.3)
    caplog.set_level(logging.WARNING, LOG)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(v2_header("203.0.113.7", 1)[:-3])  # and then nothing
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no TLS byte
    finally:
        writer.close()
    (record,) = [r for r in caplog.records if r.name == LOG]
    assert "no complete PROXY header within 0.3 s" in record.getMessage()


async def test_a_header_cut_by_the_peer_is_closed_at_once(
    start_proxied: StartProxied, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start_proxied(header_timeout=30)  # the close must not wait for this
    caplog.set_level(logging.WARNING, LOG)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PROXY TCP4 203.0.1")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
    (record,) = [r for r in caplog.records if r.name == LOG]
    assert "ended before the header was complete" in record.getMessage()


async def test_a_too_slow_header_is_closed(
    start_proxied: StartProxied, client_tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start_proxied(header_timeout=0.3)
    caplog.set_level(logging.WARNING, LOG)
    header = v1_header("203.0.113.7", 1)
    with pytest.raises(ClosedBeforeTLS):
        await proxied_request(
            port, [header[:10], header[10:]], context=client_tls, coalesce=False, pause=1.0
        )
    (record,) = [r for r in caplog.records if r.name == LOG]
    assert "within 0.3 s" in record.getMessage()


async def test_a_failed_handshake_after_a_good_header_logs_no_warning(
    start_proxied: StartProxied, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start_proxied()
    caplog.set_level(logging.WARNING, LOG)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(v2_header("203.0.113.7", 1) + b"\x16\x03\x01\x00\x05hello")
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)  # an alert, or nothing; then the end
    finally:
        writer.close()
    assert [r for r in caplog.records if r.name == LOG] == []


# --- uvloop (gateway serve --uvloop)


def test_the_same_on_uvloop(
    server_pem: PemPair, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    """The listener uses only event-loop API that uvloop has too: the good cases, the
    refusals and the timeout, on uvloop's loop and TLS transport."""

    async def scenario() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        upstream_runner, upstream_port = await start_site(upstream_app())
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        runner = web.AppRunner(
            gateway_app(settings_for(upstream_url, trusted_proxies=BALANCER)),
            access_log=None,
            shutdown_timeout=0.5,
        )
        await runner.setup()
        site = ProxyProtocolSite(
            runner,
            "127.0.0.1",
            0,
            ssl_context=server_tls,
            trusted_proxies=parse_networks(BALANCER),
            header_timeout=0.3,
        )
        await site.start()
        try:
            for header, client in (
                (v2_header("203.0.113.7", 1), "203.0.113.7"),
                (v1_header("2001:db8::7", 1), "2001:db8::7"),
                (v2_local(), "127.0.0.1"),
            ):
                response = await proxied_request(site.port, header, context=client_tls)
                assert response.echoed()["x-forwarded-for"] == [client]
            for prefix, source in (
                (v2_header("203.0.113.7", 1), "127.0.0.2"),  # not a trusted balancer
                (b"", "127.0.0.1"),  # no header
            ):
                with pytest.raises(ClosedBeforeTLS):
                    await proxied_request(
                        site.port, prefix, context=client_tls, source=source, coalesce=False
                    )
            reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
            writer.write(v2_header("203.0.113.7", 1)[:-1])  # and then nothing: the timeout
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        finally:
            await runner.cleanup()
            await upstream_runner.cleanup()

    uvloop.run(scenario())


# --- off: unchanged


async def test_without_proxy_protocol_a_header_is_a_failed_handshake(
    upstream_url: str, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    runner, port = await start_site(gateway_app(settings_for(upstream_url)), ssl_context=server_tls)
    try:
        with pytest.raises((ClosedBeforeTLS, ssl.SSLError, ConnectionError)):
            await proxied_request(port, v2_header("203.0.113.7", 1), context=client_tls)
        # and a plain TLS client is served as always, its own address forwarded
        response = await proxied_request(port, b"", context=client_tls, coalesce=False)
        assert response.echoed()["x-forwarded-for"] == ["127.0.0.1"]
    finally:
        await runner.cleanup()


# --- settings and serve options


def test_proxy_protocol_needs_trusted_proxies() -> None:
    with pytest.raises(ValueError, match="proxy_protocol = true needs trusted_proxies"):
        GatewaySettings(proxy_protocol=True)
    with pytest.raises(ValueError, match="terminator_format = 'nginx'"):
        GatewaySettings(
            proxy_protocol=True, trusted_proxies=("127.0.0.1",), terminator_format="nginx"
        )
    with pytest.raises(ValueError, match="proxy_protocol_timeout"):
        GatewaySettings(proxy_protocol_timeout=timedelta(0))
    settings = GatewaySettings(
        proxy_protocol=True,
        trusted_proxies=("10.0.0.5/32",),
        proxy_protocol_timeout=timedelta(milliseconds=500),
    )
    options = ServeOptions.from_settings(settings)
    assert options.proxy_protocol and options.trusted_proxies == ("10.0.0.5/32",)
    assert options.proxy_protocol_timeout == 0.5
    assert not ServeOptions.from_settings(GatewaySettings()).proxy_protocol
    with pytest.raises(ValueError, match="trusted_proxies"):
        ServeOptions(host="127.0.0.1", port=1, proxy_protocol=True)


async def test_serve_forever_accepts_until_closed() -> None:
    """asyncio.Server's contract, for callers other than aiohttp's runner."""
    import socket

    from gateway.tls._proxy_protocol import ProxyProtocolServer

    listener = socket.create_server(("127.0.0.1", 0))
    server = ProxyProtocolServer(
        [listener],
        protocol_factory=asyncio.Protocol,
        ssl_context=None,
        trusted_proxies=parse_networks(("127.0.0.1",)),
        header_timeout=1.0,
        backlog=8,
    )
    serving = asyncio.create_task(server.serve_forever())
    for _ in range(100):  # bounded: start_serving runs on the next loop turn
        if server.is_serving():
            break
        await asyncio.sleep(0.01)
    assert server.is_serving() and not serving.done()
    server.close()
    await asyncio.wait_for(serving, 5)
    assert not server.is_serving() and server.sockets == ()
