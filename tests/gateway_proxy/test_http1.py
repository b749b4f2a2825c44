"""The upstream pool (gateway.proxy._http1_pool) against scripted HTTP/1.1 servers on loopback.

Each scripted server is a real asyncio TCP server whose handler reads requests with a small
head parser and writes exactly the bytes a test wants, so framing corner cases (chunked,
end-of-connection bodies, 1xx answers, stale keep-alive connections, garbage) are real
bytes on a real socket. The full proxy path is tested in test_proxy.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from yarl import URL

from gateway.proxy._http1_pool import (
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
    UpstreamResponse,
)
from tests.conftest import free_port
from tests.gateway_proxy.conftest import start_site

Script = Callable[["Peer"], Awaitable[None]]
Start = Callable[[Script], Awaitable["Scripted"]]


@dataclass
class Peer:
    """One accepted connection of a scripted server."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def request(self) -> tuple[bytes, bytes]:
        """The next request's head and its Content-Length body (b"" at EOF)."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return b"", b""
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await self.reader.readexactly(length) if length else b""
        return head, body

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


@dataclass
class Scripted:
    url: URL
    connections: list[Peer] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)


@pytest.fixture
async def scripted() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> Scripted:
        state: Scripted

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = Peer(reader, writer)
            state.connections.append(peer)
            try:
                await script(peer)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        state = Scripted(URL(f"http://127.0.0.1:{port}"))
        return state

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def make_pool(url: URL, **overrides: float) -> UpstreamPool:
    options: dict[str, float] = {
        "size": 4,
        "connect_timeout": 2.0,
        "read_timeout": 2.0,
        "idle_timeout": 30.0,
    }
    options.update(overrides)
    return UpstreamPool(
        url,
        size=int(options["size"]),
        connect_timeout=options["connect_timeout"],
        read_timeout=options["read_timeout"],
        idle_timeout=options["idle_timeout"],
    )


async def body_of(response: UpstreamResponse) -> bytes:
    try:
        return await response.read()
    finally:
        response.release()


HOST = [("Host", "portal.test")]


def ok(body: bytes, *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in extra)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (
        len(body),
        head.encode(),
        body,
    )


async def serve_forever(peer: Peer, answer: bytes) -> None:
    while True:
        head, _ = await peer.request()
        if not head:
            return
        await peer.send(answer)


async def test_keep_alive_reuses_one_connection(
    scripted: Start,
) -> None:
    server = await scripted(lambda peer: serve_forever(peer, ok(b"hello")))
    pool = make_pool(server.url)
    for _ in range(3):
        response = await pool.request("GET", "/a?b=1", HOST, body=None)
        assert (response.status, response.reason) == (200, "OK")
        assert await body_of(response) == b"hello"
    assert len(server.connections) == 1
    assert pool.idle_connections == 1
    await pool.close()
    assert pool.open_connections == 0


async def test_chunked_answer_is_reassembled(scripted: Start) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    server = await scripted(lambda peer: serve_forever(peer, chunked))
    pool = make_pool(server.url)
    for _ in range(2):
        response = await pool.request("GET", "/", HOST, body=None)
        assert response.content_length is None
        assert await body_of(response) == b"hello world"
    assert len(server.connections) == 1  # the chunked framing ended the message cleanly
    await pool.close()


async def test_body_until_the_connection_closes(
    scripted: Start,
) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        await peer.send(b"part two")

    server = await scripted(script)
    pool = make_pool(server.url)
    response = await pool.request("GET", "/", HOST, body=None)
    assert await body_of(response) == b"part one, part two"
    assert pool.open_connections == 0  # not reusable: its end was the connection's end
    await pool.close()


async def test_interim_answers_are_skipped(scripted: Start) -> None:
    early_hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    server = await scripted(lambda peer: serve_forever(peer, early_hints + ok(b"page", "X-A: 1")))
    pool = make_pool(server.url)
    response = await pool.request("GET", "/", HOST, body=None)
    assert response.status == 200
    assert "Link" not in response.headers and response.headers["X-A"] == "1"
    assert await body_of(response) == b"page"
    response = await pool.request("GET", "/", HOST, body=None)  # same connection, in step
    assert await body_of(response) == b"page"
    assert len(server.connections) == 1
    await pool.close()


async def test_head_answer_has_no_body_and_is_not_reused(
    scripted: Start,
) -> None:
    async def script(peer: Peer) -> None:
        while True:
            head, _ = await peer.request()
            if not head:
                return
            if head.startswith(b"HEAD"):
                await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            else:
                await peer.send(ok(b"full"))

    server = await scripted(script)
    pool = make_pool(server.url)
    response = await pool.request("HEAD", "/", HOST, body=None)
    assert response.content_length == 1000
    assert await body_of(response) == b""
    response = await pool.request("GET", "/", HOST, body=None)
    assert await body_of(response) == b"full"
    assert len(server.connections) == 2  # llhttp would have read the GET answer as HEAD body
    await pool.close()


async def test_no_content_and_not_modified_end_without_body(
    scripted: Start,
) -> None:
    answers = iter([b"HTTP/1.1 204 No Content\r\n\r\n", b"HTTP/1.1 304 Not Modified\r\n\r\n"])

    async def script(peer: Peer) -> None:
        for answer in answers:
            await peer.request()
            await peer.send(answer)
        await peer.request()

    server = await scripted(script)
    pool = make_pool(server.url)
    for status in (204, 304):
        response = await pool.request("GET", "/", HOST, body=None)
        assert response.status == status
        assert await body_of(response) == b""
    assert len(server.connections) == 1
    await pool.close()


async def test_stale_connection_retried_for_idempotent_requests_only(
    scripted: Start,
) -> None:
    async def script(peer: Peer) -> None:
        # Answers one request, then drops the connection when the next one arrives: what an
        # upstream does whose keep-alive timeout ran out just as the request was sent.
        await peer.request()
        await peer.send(ok(b"first"))
        await peer.request()
        peer.writer.transport.abort()

    server = await scripted(script)
    pool = make_pool(server.url)
    assert await body_of(await pool.request("GET", "/", HOST, body=None)) == b"first"
    # GET: the dead connection is noticed and the request sent again on a new one.
    assert await body_of(await pool.request("GET", "/", HOST, body=None)) == b"first"
    assert len(server.connections) == 2
    # POST: never sent twice (RFC 9110 §9.2.2); the caller gets the error (a 502 page).
    with pytest.raises(UpstreamProtocolError):
        await pool.request("POST", "/", HOST, body=b"x=1")
    assert len(server.connections) == 2
    assert pool.open_connections == 0
    await pool.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 abc Broken\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["bad-status", "two-lengths", "length-and-chunked", "unasked-upgrade", "garbage"],
)
async def test_malformed_answers_are_protocol_errors(scripted: Start, answer: bytes) -> None:
    server = await scripted(lambda peer: serve_forever(peer, answer))
    pool = make_pool(server.url)
    with pytest.raises(UpstreamProtocolError):
        response = await pool.request("GET", "/", HOST, body=None)
        await body_of(response)
    assert pool.open_connections == 0
    await pool.close()


async def test_answer_cut_short_is_an_error(scripted: Start) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")

    server = await scripted(script)
    pool = make_pool(server.url)
    response = await pool.request("GET", "/", HOST, body=None)
    with pytest.raises(UpstreamProtocolError):
        await body_of(response)
    assert pool.open_connections == 0
    await pool.close()


async def test_no_answer_is_a_timeout(scripted: Start) -> None:
    stop = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.request()
        await stop.wait()  # never answers

    server = await scripted(script)
    pool = make_pool(server.url, read_timeout=0.2)
    with pytest.raises(TimeoutError):
        await pool.request("GET", "/", HOST, body=None)
    assert pool.open_connections == 0
    stop.set()
    await pool.close()


async def test_unreachable_upstream(scripted: Start) -> None:
    pool = make_pool(URL(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(UpstreamConnectError, match="cannot connect"):
        await pool.request("GET", "/", HOST, body=None)
    assert pool.open_connections == 0
    await pool.close()


async def test_pool_size_bounds_connections(scripted: Start) -> None:
    release_first = asyncio.Event()

    async def script(peer: Peer) -> None:
        while True:
            head, _ = await peer.request()
            if not head:
                return
            if b"/slow" in head:
                await release_first.wait()
            await peer.send(ok(b"x"))

    server = await scripted(script)
    pool = make_pool(server.url, size=1, connect_timeout=0.2)
    slow = asyncio.create_task(pool.request("GET", "/slow", HOST, body=None))
    await asyncio.sleep(0)  # let it take the only connection
    with pytest.raises(TimeoutError, match="busy"):
        await pool.request("GET", "/fast", HOST, body=None)
    waiting = asyncio.create_task(pool.request("GET", "/fast", HOST, body=None))
    release_first.set()
    assert await body_of(await slow) == b"x"
    assert await body_of(await waiting) == b"x"
    assert len(server.connections) == 1
    await pool.close()


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/", [("X-A", "1\r\nX-Brokergate-Level: strong")]),
        ("/", [("X-A\r\nX-B", "1")]),
        ("/", [("X-A", "1\x00")]),
        ("/a b", []),
        ("/a\r\nX: 1", []),
        ("http://elsewhere/", []),
    ],
)
async def test_header_and_target_injection_refused(
    scripted: Start, target: str, headers: list[tuple[str, str]]
) -> None:
    server = await scripted(lambda peer: serve_forever(peer, ok(b"x")))
    pool = make_pool(server.url)
    with pytest.raises(ValueError):
        await pool.request("GET", target, [*HOST, *headers], body=None)
    assert server.connections == []  # refused before any connection was opened
    await pool.close()


async def test_framing_is_decided_by_the_pool(scripted: Start) -> None:
    heads: list[bytes] = []

    async def script(peer: Peer) -> None:
        while True:
            head, body = await peer.request()
            if not head:
                return
            heads.append(head)
            await peer.send(ok(body))

    server = await scripted(script)
    pool = make_pool(server.url)
    # A client's framing headers never reach the upstream; the pool frames from the body.
    smuggle = [*HOST, ("Content-Length", "0"), ("Transfer-Encoding", "chunked")]
    response = await pool.request("POST", "/", smuggle, body=b"a=1&b=2")
    assert await body_of(response) == b"a=1&b=2"
    response = await pool.request("POST", "/", HOST, body=None)
    assert await body_of(response) == b""
    response = await pool.request("GET", "/", HOST, body=None)
    assert await body_of(response) == b""
    assert heads[0].lower().count(b"content-length") == 1
    assert b"content-length: 7" in heads[0].lower()
    assert b"transfer-encoding" not in heads[0].lower()
    assert b"content-length: 0" in heads[1].lower()
    assert b"content-length" not in heads[2].lower()
    await pool.close()


class Chunks:
    """A streamed request body (what aiohttp's StreamReader offers: readany)."""

    def __init__(self, *parts: bytes) -> None:
        self._parts = list(parts)

    async def readany(self) -> bytes:
        return self._parts.pop(0) if self._parts else b""


async def echo_upload(request: web.Request) -> web.Response:
    body = await request.read()
    framing = "chunked" if request.headers.get("Transfer-Encoding") else "length"
    return web.Response(text=f"{framing} {len(body)} {body[:5].decode()}")


async def test_streamed_uploads_chunked_and_with_length() -> None:
    app = web.Application()
    app.router.add_post("/up", echo_upload)
    runner, port = await start_site(app)
    pool = make_pool(URL(f"http://127.0.0.1:{port}"))
    try:
        parts = (b"hello", b" " * 70_000, b"world")
        response = await pool.request("POST", "/up", HOST, body=Chunks(*parts))
        assert await body_of(response) == b"chunked 70010 hello"
        response = await pool.request(
            "POST", "/up", HOST, body=Chunks(*parts), content_length=70_010
        )
        assert await body_of(response) == b"length 70010 hello"
    finally:
        await pool.close()
        await runner.cleanup()


async def test_early_answer_during_upload_is_returned(
    scripted: Start,
) -> None:
    sent_answer = asyncio.Event()

    async def script(peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
        sent_answer.set()

    class SlowBody:
        def __init__(self) -> None:
            self.sent = 0

        async def readany(self) -> bytes:
            if self.sent == 1:
                await sent_answer.wait()
                await asyncio.sleep(0.05)  # the answer's bytes reach the pool's socket
            self.sent += 1
            return b"x" * 1000 if self.sent < 1000 else b""

    server = await scripted(script)
    pool = make_pool(server.url)
    response = await pool.request("PUT", "/", HOST, body=SlowBody(), content_length=999_000)
    assert response.status == 413
    assert await body_of(response) == b"big!"
    assert pool.open_connections == 0  # its request was cut short: never reused
    await pool.close()


async def test_unsolicited_bytes_on_an_idle_connection_retire_it(
    scripted: Start,
) -> None:
    first = True

    async def script(peer: Peer) -> None:
        nonlocal first
        if first:  # the first connection answers one request with two answers
            first = False
            await peer.request()
            await peer.send(ok(b"one") + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsmuggl")
        await serve_forever(peer, ok(b"two"))

    server = await scripted(script)
    pool = make_pool(server.url)
    assert await body_of(await pool.request("GET", "/", HOST, body=None)) == b"one"
    # The extra answer must never be taken for the next request's.
    assert await body_of(await pool.request("GET", "/", HOST, body=None)) == b"two"
    assert len(server.connections) == 2
    await pool.close()


async def test_idle_connections_expire(scripted: Start) -> None:
    server = await scripted(lambda peer: serve_forever(peer, ok(b"x")))
    pool = make_pool(server.url, idle_timeout=0.0)
    for _ in range(2):
        assert await body_of(await pool.request("GET", "/", HOST, body=None)) == b"x"
    assert len(server.connections) == 2  # the idle one was older than idle_timeout
    await pool.close()


async def test_upstream_closing_an_idle_connection_frees_its_slot(
    scripted: Start,
) -> None:
    async def script(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok(b"x"))  # then the handler returns and the server closes it

    server = await scripted(script)
    pool = make_pool(server.url, size=1)
    assert await body_of(await pool.request("GET", "/", HOST, body=None)) == b"x"
    for _ in range(100):  # bounded: the close reaches the pool within a few loop turns
        if pool.open_connections == 0:
            break
        await asyncio.sleep(0.01)
    assert pool.open_connections == 0
    assert await body_of(await pool.request("GET", "/", HOST, body=None)) == b"x"
    await pool.close()
