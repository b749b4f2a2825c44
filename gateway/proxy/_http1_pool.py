"""A pooled HTTP/1.1 client for the one upstream: the proxy's plain-HTTP leg.

Why not ``aiohttp.ClientSession``: the gateway talks to exactly one upstream, never follows
redirects, never keeps cookies, never decompresses and forwards bodies byte for byte, yet
aiohttp's client spent about three quarters of the gateway's CPU per proxied request on
what it does for the general case (request and response objects, connector bookkeeping,
tracing hooks, per-request timers; measured in docs/benchmarks.md). This module does only
what a reverse proxy needs: one request at a time per pooled connection, a request head
written in one piece, and the response parsed by ``httptools`` (llhttp, the parser Node.js
and aiohttp's own C parser are built on). Framing is never done by hand on the read side;
on the write side the gateway frames the request itself (``Content-Length`` or ``chunked``)
and never forwards the client's framing headers, so a request cannot be smuggled past it.
WebSockets still go through aiohttp (``gateway.proxy._upstream``).

Usage::

    pool = UpstreamPool(URL("http://127.0.0.1:8080"), size=64, connect_timeout=5,
                        read_timeout=60, idle_timeout=4)
    response = await pool.request("GET", "/path?q", [("Host", "portal")], body=None)
    try:
        chunk = await response.read_chunk()        # b"" at the end of the body
    finally:
        response.release()                          # back to the pool, or closed
    await pool.close()

Errors: :class:`UpstreamConnectError` (could not connect), :class:`UpstreamProtocolError`
(the exchange broke: reset, early close, malformed answer) and ``TimeoutError`` (connect,
pool wait, or no byte from the upstream for ``read_timeout`` while waiting for one).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar, cast

import httptools
from multidict import CIMultiDict
from yarl import URL

# Body bytes buffered from the upstream before its socket is paused (flow control): a slow
# client then slows the upstream down instead of growing the gateway's memory.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
# A request body up to this size (with Content-Length) is read first and sent with the head in
# one write; larger and chunked bodies are streamed.
SMALL_REQUEST_BODY = 64 * 1024
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# CR, LF and NUL would end a header line early (header injection / request splitting).
_FORBIDDEN_IN_HEADER = re.compile(r"[\r\n\x00]")
# A request target is one token: any whitespace or control byte would split the request line.
_FORBIDDEN_IN_TARGET = re.compile(r"[\x00-\x20\x7f]")
_FRAMING = frozenset({"content-length", "transfer-encoding"})
_T = TypeVar("_T")


class UpstreamConnectError(ConnectionError):
    """No connection to the upstream could be opened."""


class UpstreamProtocolError(ConnectionError):
    """The exchange with the upstream broke off or its answer was not valid HTTP/1.1."""


class BodySource(Protocol):
    """Where a streamed request body comes from (aiohttp's ``StreamReader`` is one)."""

    async def readany(self) -> bytes: ...


class _Connection(asyncio.Protocol):
    """One upstream connection; one exchange at a time. Also the parser's callback object."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.dropped = False  # no longer counted in the pool's open connections
        self.request_sent = False  # the whole request went out (else the framing is unknown)
        self.keep_alive = False  # the finished answer allows another request on this connection
        self._parser: httptools.HttpResponseParser | None = None
        self._head_only = False
        self._reason = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._informational = False
        self.response: UpstreamResponse | None = None
        self._headers_waiter: asyncio.Future[UpstreamResponse] | None = None
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._body_waiter: asyncio.Future[None] | None = None
        self.received_any = False
        self.complete = False
        self.error: BaseException | None = None
        self._reading_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._writing_paused = False

    # --- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            # Bytes while no request is outstanding: the upstream is out of step with us
            # (or sent a late body after a HEAD answer). Never reuse this connection.
            self._fail(UpstreamProtocolError("upstream sent data without a request"))
            return
        self.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("upstream switched protocols unasked"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"invalid HTTP from upstream: {exc}"))

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._parser is not None and not self.complete:
            if self.response is not None and self._until_eof():
                self.on_message_complete()  # a body delimited by the end of the connection
            else:
                what = "reset" if exc is not None else "closed"
                self._fail(UpstreamProtocolError(f"upstream {what} the connection mid-answer"))
        self._wake_drain(exc)
        self._pool.forget(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_drain(None)

    # --- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # A second answer in the same bytes as the first: we sent one request. Refuse it
            # (the parser turns this into an error) so it is never read as another's answer.
            raise UpstreamProtocolError("upstream sent more than one answer")

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # 1xx interim answers (103 Early Hints; 100 is not asked for, Expect is not
            # forwarded) are dropped; the final answer follows on the same connection.
            self._informational = True
            self._raw_headers = []
            self._reason = b""
            return
        headers: CIMultiDict[str] = CIMultiDict(
            # The same decoding as aiohttp's parser, so odd bytes survive the round trip.
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
            for name, value in self._raw_headers
        )
        response = UpstreamResponse(
            self,
            status=status,
            reason=self._reason.decode("utf-8", "surrogateescape"),
            headers=headers,
        )
        self.response = response
        if self._head_only or status in (204, 304):
            # No body follows. After a HEAD answer llhttp would still expect Content-Length
            # bytes, so that connection is not reused (release() closes it).
            self.complete = True
        waiter = self._headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def on_body(self, data: bytes) -> None:
        if self._head_only:
            return
        self._body.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_body()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        assert self._parser is not None
        # Asked here: llhttp resets its state (and with it this answer) once this returns.
        self.keep_alive = self._parser.should_keep_alive()
        self.complete = True
        self._wake_body()

    # --- used by the pool and UpstreamResponse -------------------------------------------

    def start(self, *, head_only: bool) -> asyncio.Future[UpstreamResponse]:
        """Prepare for one exchange; the future resolves with the answer's head."""
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._reason = b""
        self._raw_headers = []
        self._informational = False
        self.response = None
        self._body.clear()
        self._buffered = 0
        self.complete = False
        self.received_any = False
        self.request_sent = False
        self.keep_alive = False
        self._headers_waiter = self._loop.create_future()
        return self._headers_waiter

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise self.error or UpstreamProtocolError("upstream closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        if not self._writing_paused:
            return
        if self.transport is None:
            raise self.error or UpstreamProtocolError("upstream closed the connection")
        self._drain_waiter = self._loop.create_future()
        await self._pool.wait(self._drain_waiter, self)

    async def read_chunk(self) -> bytes:
        while not self._body:
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            self._body_waiter = self._loop.create_future()
            await self._pool.wait(self._body_waiter, self)
        chunk = self._body.popleft()
        self._buffered -= len(chunk)
        if self._reading_paused and self._buffered < _LOW_WATER and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    def reusable(self) -> bool:
        return (
            self.complete
            and self.request_sent
            and not self._head_only
            and self.error is None
            and self.transport is not None
            and not self.transport.is_closing()
            and self.keep_alive
        )

    def end_exchange(self) -> None:
        self._parser = None
        self._headers_waiter = None
        self._body_waiter = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _until_eof(self) -> bool:
        """The answer's body ends with the connection (no length, not chunked)."""
        assert self.response is not None
        headers = self.response.headers
        return (
            "Content-Length" not in headers
            and "chunked" not in headers.get("Transfer-Encoding", "").lower()
        )

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        waiter = self._headers_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self._wake_body()
        if self.transport is not None:
            self.transport.abort()

    def fail_timeout(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError("no data from the upstream in time"))
        self.error = self.error or TimeoutError("no data from the upstream in time")
        if self.transport is not None:
            self.transport.abort()

    def _wake_body(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_drain(self, exc: Exception | None) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            if exc is None and self.transport is not None:
                waiter.set_result(None)
            else:
                waiter.set_exception(UpstreamProtocolError("upstream closed while we wrote"))


class UpstreamResponse:
    """The upstream's answer: status, reason, headers; the body is read with read_chunk()."""

    __slots__ = ("_connection", "_released", "headers", "reason", "status")

    def __init__(
        self, connection: _Connection, *, status: int, reason: str, headers: CIMultiDict[str]
    ) -> None:
        self._connection = connection
        self.status = status
        self.reason = reason
        self.headers = headers
        self._released = False

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    async def read_chunk(self) -> bytes:
        """The next piece of the body, b"" at its end.

        Raises:
            UpstreamProtocolError: the body broke off.
            TimeoutError: no byte for read_timeout.
        """
        return await self._connection.read_chunk()

    async def read(self) -> bytes:
        """The whole body (only for bodies known to be small)."""
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Give the connection back to the pool when the answer was read in full, else close."""
        if not self._released:
            self._released = True
            self._connection._pool.release(self._connection)


class UpstreamPool:
    """Keep-alive connections to one upstream, at most ``size`` open at a time."""

    def __init__(
        self,
        base_url: URL,
        *,
        size: int,
        connect_timeout: float,
        read_timeout: float,
        idle_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if base_url.scheme not in ("http", "https") or not base_url.host:
            raise ValueError(f"upstream URL {str(base_url)!r} must be http(s)://host[:port]")
        self.loop = asyncio.get_running_loop()
        self._host = base_url.host
        self._port = base_url.port or (443 if base_url.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if base_url.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self._size = size
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle_timeout = idle_timeout
        self._idle: list[_Connection] = []  # LIFO: the warmest connection first
        self._open = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        *,
        body: bytes | BodySource | None,
        content_length: int | None = None,
    ) -> UpstreamResponse:
        """Send one request and return the answer's head once it has arrived.

        Args:
            method: the request method (already validated by the server's parser).
            target: the request target, already encoded (origin form: ``/path?query``).
            headers: request headers; any Content-Length/Transfer-Encoding is ignored, the
                framing is decided here from ``body``.
            body: ``None`` (no body), the whole body as bytes, or a source to stream from.
            content_length: for a streamed body, its announced length; ``None`` streams it
                chunked.

        Raises:
            ValueError: a header name or value contains CR, LF or NUL, or the target is not
                one token starting with "/".
            UpstreamConnectError, UpstreamProtocolError, TimeoutError: see the module doc.
        """
        if not target.startswith("/") or _FORBIDDEN_IN_TARGET.search(target):
            raise ValueError(f"request target {target!r} is not an origin-form target")
        fields = [f"{name}: {value}\r\n" for name, value in headers if name.lower() not in _FRAMING]
        text = "".join(fields)
        # Each field line carries exactly one CR and one LF; any more means a name or value
        # had one inside (header injection). Two counts over the whole text, not a regex
        # per header: this runs on every proxied request.
        if text.count("\n") != len(fields) or text.count("\r") != len(fields) or "\0" in text:
            bad = next(f for f in fields if _FORBIDDEN_IN_HEADER.search(f.removesuffix("\r\n")))
            raise ValueError(f"header {bad.split(':', 1)[0]!r} contains CR, LF or NUL")
        lines = [f"{method} {target} HTTP/1.1\r\n", text]
        streamed = body is not None and not isinstance(body, bytes)
        if isinstance(body, bytes):
            if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS", "TRACE"):
                lines.append(f"Content-Length: {len(body)}\r\n")
        elif streamed:
            if content_length is not None:
                lines.append(f"Content-Length: {content_length}\r\n")
            else:
                lines.append("Transfer-Encoding: chunked\r\n")
        elif method in ("POST", "PUT", "PATCH"):
            lines.append("Content-Length: 0\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("utf-8", "surrogateescape")
        head_only = method == "HEAD"
        # A connection the upstream closed while idle (its keep-alive timeout) fails before
        # any byte of an answer; such a request is sent again on a fresh connection when
        # that is safe (RFC 9110 §9.2.2: idempotent, and the body is still at hand).
        retry_allowed = method in _IDEMPOTENT and not streamed
        while True:
            connection, reused = await self._acquire()
            try:
                return await self._exchange(
                    connection, head, body, content_length, head_only=head_only
                )
            except UpstreamProtocolError:
                if reused and retry_allowed and not connection.received_any:
                    retry_allowed = False
                    continue
                raise

    async def _exchange(
        self,
        connection: _Connection,
        head: bytes,
        body: bytes | BodySource | None,
        content_length: int | None,
        *,
        head_only: bool,
    ) -> UpstreamResponse:
        answer = connection.start(head_only=head_only)
        try:
            if body is None or isinstance(body, bytes):
                connection.write(head + body if body else head)
                connection.request_sent = True
            else:
                connection.write(head)
                try:
                    connection.request_sent = await self._send_body(
                        connection, body, chunked=content_length is None
                    )
                except ConnectionError:
                    if connection.response is None:
                        raise
                    # The upstream answered (e.g. 413) and closed before taking the whole
                    # body: its answer stands, the connection is not reused.
            return await self.wait(answer, connection)
        except BaseException:
            connection.end_exchange()
            connection.abort()
            self._drop(connection)
            raise

    async def _send_body(
        self, connection: _Connection, source: BodySource, *, chunked: bool
    ) -> bool:
        """Stream the body; False when the upstream answered before it was all sent."""
        while True:
            if connection.response is not None:
                # The upstream answered early (e.g. 413): stop sending and read its answer;
                # the connection is closed afterwards (reusable() needs request_sent).
                return False
            chunk = await source.readany()
            if not chunk:
                break
            if connection.response is not None:
                return False
            connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await connection.drain()
        if chunked:
            connection.write(b"0\r\n\r\n")
        return True

    async def wait(self, waiter: asyncio.Future[_T], connection: _Connection) -> _T:
        """Await ``waiter``; after ``read_timeout`` seconds without it, fail the connection."""
        handle = self.loop.call_later(self.read_timeout, connection.fail_timeout, waiter)
        try:
            return await waiter
        finally:
            handle.cancel()

    async def _acquire(self) -> tuple[_Connection, bool]:
        if self._closed:
            raise UpstreamConnectError("the upstream pool is closed")
        deadline = self.loop.time() + self.connect_timeout
        while True:
            now = self.loop.time()
            while self._idle:
                connection = self._idle.pop()
                if (
                    connection.transport is not None
                    and not connection.transport.is_closing()
                    and now - connection.idle_since < self._idle_timeout
                ):
                    return connection, True
                connection.close()
                self._drop(connection)
            if self._open < self._size:
                return await self._connect(deadline), False
            # Every connection is busy: wait for one to come back (within connect_timeout).
            slot: asyncio.Future[None] = self.loop.create_future()
            self._slot_waiters.append(slot)
            try:
                async with asyncio.timeout_at(deadline):
                    await slot
            except TimeoutError:
                raise TimeoutError(
                    f"all {self._size} upstream connections busy for {self.connect_timeout:g} s"
                ) from None
            finally:
                if not slot.done():
                    slot.cancel()
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(slot)

    async def _connect(self, deadline: float) -> _Connection:
        self._open += 1
        connection = _Connection(self)
        try:
            async with asyncio.timeout_at(deadline):
                await self.loop.create_connection(
                    lambda: connection,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            self._open -= 1
            self._wake_slot()
            raise TimeoutError(
                f"no connection to the upstream {self._host}:{self._port} "
                f"in {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            self._open -= 1
            self._wake_slot()
            raise UpstreamConnectError(
                f"cannot connect to the upstream {self._host}:{self._port}: {exc}"
            ) from exc
        except BaseException:
            self._open -= 1
            self._wake_slot()
            connection.abort()
            raise
        return connection

    def release(self, connection: _Connection) -> None:
        """The exchange on ``connection`` is over: keep it for the next one, or close it."""
        keep = connection.reusable() and not self._closed
        connection.end_exchange()
        if keep:
            connection.idle_since = self.loop.time()
            self._idle.append(connection)
            self._wake_slot()
        else:
            if connection.complete:
                connection.close()
            else:
                connection.abort()  # a half-read answer: nothing worth a clean close
            self._drop(connection)

    def forget(self, connection: _Connection) -> None:
        """``connection`` was closed (by either side)."""
        if connection in self._idle:
            self._idle.remove(connection)
            self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        if connection.dropped:
            return
        connection.dropped = True
        self._open -= 1
        self._wake_slot()

    def _wake_slot(self) -> None:
        while self._slot_waiters:
            slot = self._slot_waiters.popleft()
            if not slot.done():
                slot.set_result(None)
                return

    async def close(self) -> None:
        """Close every idle connection; busy ones close when their exchange ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
            self._drop(connection)
        for slot in self._slot_waiters:
            if not slot.done():
                slot.set_exception(UpstreamConnectError("the upstream pool is closed"))
