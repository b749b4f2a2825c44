"""The HTTPS listener: bounded TLS handshakes, request heads and idle time; a connection cap.

Without this, aiohttp's ``TCPSite`` let an idle TLS connection stay open for 90 s and held
200 slow-header connections (issue 17, item 3): asyncio gives a handshake 60 s, and aiohttp
gives a connection that never completes a request head its whole keep-alive time (an hour).
:class:`GatewaySite` is used for every HTTPS listener instead (``gateway serve``); every
connection it accepts runs through these bounds (:class:`ConnectionLimits`):

1. ``max_connections``: at most this many connections per worker, from accept to close.
   At the cap the listener stops accepting; new connections wait in the kernel's listen
   queue (``LISTEN_BACKLOG``) and are accepted as slots free up; beyond the queue the
   kernel refuses them. Queuing, not refusing, so that a burst of honest brokers only
   waits.
2. ``tls_handshake_timeout``: the handshake must finish within this time after accept.
3. ``first_request_timeout``: after the handshake, the first byte of a request must arrive
   within this time (an idle TLS connection is closed).
4. ``request_head_timeout``: from a request's first byte, its head (request line and
   headers, up to the blank line) must be complete within this time (slow-header attacks).
5. ``keepalive_timeout``: after a response, the next request's first byte must arrive
   within this time; then 4. applies again.

Each close by the gateway is counted in ``brokergate_connections_closed_total{reason}``
(``reason`` one of :data:`CLOSE_REASONS`). The body of a request is not bounded here: the
handlers read it with the body-size limit, and the upstream read timeout bounds the proxy.

Mechanics: the accept loop is our own (``add_reader`` on the listening sockets, like
``gateway.tls._proxy_protocol``) so the cap can pause it; TLS runs through
``loop.connect_accepted_socket(…, ssl=…)``, the same handshake as ``create_server``, so
asyncio's loop and uvloop both work. aiohttp's handler gets a :class:`_GuardedConnection`
as its protocol, which sees every chunk before the handler (to find the end of a head) and
learns from the wrapped request handler when a request starts and ends.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from yarl import URL

from gateway._metrics import CONNECTION_CLOSE_REASONS
from gateway.tls._context import CLIENT_CERTIFICATE_MESSAGE_LIMIT

log = logging.getLogger("gateway.listener")

__all__ = [
    "CLOSE_REASONS",
    "ConnectionLimits",
    "GatewayServer",
    "GatewaySite",
    "guarded_protocol_factory",
    "listening_sockets",
]

CLOSE_REASONS = CONNECTION_CLOSE_REASONS
"""Label values of ``brokergate_connections_closed_total`` (closes by the gateway)."""

ACCEPT_RETRY_DELAY = 1.0  # out of file descriptors: asyncio's own accept loop waits 1 s too
HEAD_END = b"\r\n\r\n"  # RFC 9112 §2.1: the head ends with an empty line

CloseCounter = Callable[[str], object]
ProtocolFactory = Callable[[], asyncio.BaseProtocol]


@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    """The bounds of one listener (seconds; see the module docstring for each)."""

    max_connections: int = 1024
    tls_handshake_timeout: float = 10.0
    first_request_timeout: float = 10.0
    request_head_timeout: float = 10.0
    keepalive_timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in (
            "tls_handshake_timeout",
            "first_request_timeout",
            "request_head_timeout",
            "keepalive_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be longer than 0s")


class _Slots:
    """Counts a listener's open connections; pauses and resumes its accept loop at the cap."""

    def __init__(self, limit: int, *, on_full: Callable[[], None], on_free: Callable[[], None]):
        self.limit = limit
        self.open = 0
        self._on_full = on_full
        self._on_free = on_free

    def take(self) -> None:
        self.open += 1
        if self.open == self.limit:
            self._on_full()

    def give_back(self) -> None:
        self.open -= 1
        if self.open == self.limit - 1:
            self._on_free()


class _GuardedConnection(asyncio.Protocol):
    """aiohttp's handler behind a watchdog for the first request, request heads and idle
    time. Owned by the transport (its protocol) for the connection's life."""

    def __init__(
        self,
        handler: asyncio.Protocol,
        limits: ConnectionLimits,
        count_close: CloseCounter,
        on_lost: Callable[[], None],
    ) -> None:
        self._handler = handler
        self._limits = limits
        self._count_close = count_close
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reason = ""
        self._idle = True  # between requests: waiting for a first byte
        self._in_head = False  # a head has begun but not ended
        self._tail = b""  # the last bytes of the head so far (HEAD_END may span chunks)
        self._closed_by_us = False

    # --- the watchdog
    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._reason = reason
        self._timer = self._loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._reason == "keepalive_timeout" and transport.get_write_buffer_size():
            # The last response is still being sent to a slow reader: not idle yet.
            self._arm(self._limits.keepalive_timeout, "keepalive_timeout")
            return
        self._closed_by_us = True
        self._count_close(self._reason)
        log.debug("closing a connection: %s", self._reason)
        transport.abort()  # SECURITY: no graceful TLS shutdown owed to a stalling client

    def request_started(self) -> None:
        """aiohttp has parsed a head and calls the app."""
        self._disarm()
        self._idle = self._in_head = False
        self._tail = b""

    def request_finished(self) -> None:
        """The app returned; until the next request the connection is idle."""
        self._idle = True
        if not self._in_head:
            self._arm(self._limits.keepalive_timeout, "keepalive_timeout")

    # --- asyncio.Protocol, passed on to aiohttp's handler
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._arm(self._limits.first_request_timeout, "first_request_timeout")
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._idle and not self._in_head and data:
            self._in_head = True
            self._arm(self._limits.request_head_timeout, "request_head_timeout")
        if self._in_head:
            seen = self._tail + data
            if HEAD_END in seen:
                # The head is complete; aiohttp calls the app next (request_started).
                self._in_head = False
                self._tail = b""
                self._disarm()
            else:
                self._tail = seen[-(len(HEAD_END) - 1) :]
        self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        return self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._transport = None
        try:
            self._handler.connection_lost(exc)
        finally:
            self._on_lost()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


def guarded_protocol_factory(
    server: web.Server,
    limits: ConnectionLimits,
    count_close: CloseCounter,
    on_lost: Callable[[], None] = lambda: None,
) -> ProtocolFactory:
    """A protocol factory: aiohttp's handler for ``server`` behind :class:`_GuardedConnection`.

    Wraps ``server.request_handler`` once (aiohttp's public attribute, read by each new
    handler) so the guard learns when its request starts and ends.
    """
    guards: dict[int, _GuardedConnection] = {}
    inner = server.request_handler
    if not getattr(inner, "_gateway_guarded", False):

        async def tracked(request: web.BaseRequest) -> web.StreamResponse:
            guard = guards.get(id(request.protocol))
            if guard is not None:
                guard.request_started()
            try:
                return await inner(request)
            finally:
                if guard is not None:
                    guard.request_finished()

        tracked._gateway_guarded = True  # type: ignore[attr-defined]
        server.request_handler = tracked

    def factory() -> asyncio.BaseProtocol:
        handler = server()
        key = id(handler)

        def lost() -> None:
            guards.pop(key, None)
            on_lost()

        guard = _GuardedConnection(handler, limits, count_close, lost)
        guards[key] = guard
        return guard

    return factory


class GatewayServer(asyncio.AbstractServer):
    """Accepts on listening sockets within the cap, bounds the TLS handshake and hands the
    connection to ``protocol_factory``. Owns the listening sockets and the connections
    still in their handshake; a handed-over connection belongs to aiohttp.
    """

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        *,
        server: web.Server,
        ssl_context: ssl.SSLContext | None,
        limits: ConnectionLimits,
        count_close: CloseCounter,
        backlog: int,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sockets = tuple(sockets)
        self._ssl_context = ssl_context
        self._limits = limits
        self._count_close = count_close
        self._backlog = backlog
        self._slots = _Slots(
            limits.max_connections, on_full=self._pause_accepting, on_free=self._resume_all
        )
        self._protocol_factory = guarded_protocol_factory(
            server, limits, count_close, self._slots.give_back
        )
        self._admitting: set[asyncio.Task[None]] = set()
        self._serving = False
        self._accepting = False
        self._closed: asyncio.Future[None] = self._loop.create_future()
        for listener in self._sockets:
            listener.setblocking(False)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return self._sockets if self._serving else ()

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed (at most ``max_connections``)."""
        return self._slots.open

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if self._serving:
            return
        self._serving = True
        self._resume_all()

    def close(self) -> None:
        """Stop accepting now (the listening sockets close); drop unfinished handshakes."""
        if not self._closed.done():
            self._closed.set_result(None)
        if not self._serving:
            return
        self._pause_accepting()
        self._serving = False
        for listener in self._sockets:
            listener.close()
        for task in self._admitting:
            task.cancel()

    async def serve_forever(self) -> None:
        await self.start_serving()
        try:
            await asyncio.shield(self._closed)
        finally:
            self.close()

    async def wait_closed(self) -> None:
        if self._admitting:
            await asyncio.gather(*self._admitting, return_exceptions=True)

    def _pause_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            for listener in self._sockets:
                self._loop.remove_reader(listener.fileno())

    def _resume_all(self) -> None:
        if self._serving and not self._accepting and self._slots.open < self._slots.limit:
            self._accepting = True
            for listener in self._sockets:
                self._loop.add_reader(listener.fileno(), self._accept, listener)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(self._backlog):  # bounded, like asyncio's own accept loop
            if not self._accepting:
                return  # the cap was reached within this loop
            try:
                sock, _address = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                log.error(
                    "cannot accept connections (%s); trying again in %.0f s",
                    exc.strerror or exc,
                    ACCEPT_RETRY_DELAY,
                )
                self._pause_accepting()
                self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume_all)
                return
            sock.setblocking(False)
            self._slots.take()
            task = self._loop.create_task(self._admit(sock))
            self._admitting.add(task)
            task.add_done_callback(self._admitting.discard)

    async def _admit(self, sock: socket.socket) -> None:
        handed_over = False
        try:
            timeout = self._limits.tls_handshake_timeout
            # asyncio's own handshake timeout is a backstop only; ours is the one counted.
            extra: dict[str, Any] = {"ssl_handshake_timeout": timeout * 2}
            if self._ssl_context is None:
                extra = {}
            async with asyncio.timeout(timeout):
                handed_over = True  # the loop's transport owns (and closes) sock from here
                await self._loop.connect_accepted_socket(
                    self._protocol_factory, sock, ssl=self._ssl_context, **extra
                )
        except TimeoutError:
            self._count_close("tls_handshake_timeout")
            self._slots.give_back()
        except ssl.SSLError as exc:
            self._slots.give_back()
            if exc.reason == "EXCESSIVE_MESSAGE_SIZE":
                # Past OpenSSL's max_cert_list, in practice a client certificate over
                # CLIENT_CERTIFICATE_MESSAGE_LIMIT (the only message a client can make that big).
                self._count_close("handshake_message_too_large")
                log.info(
                    "a TLS handshake was refused: a handshake message (a client certificate?)"
                    " is larger than the gateway reads (%d bytes)",
                    CLIENT_CERTIFICATE_MESSAGE_LIMIT,
                )
            else:
                self._count_close("tls_handshake_failed")
                log.debug("connection ended before it was served: %r", exc)
        except OSError as exc:
            self._count_close("tls_handshake_failed")
            self._slots.give_back()
            log.debug("connection ended before it was served: %r", exc)
        except asyncio.CancelledError:
            self._slots.give_back()
            raise
        finally:
            if not handed_over:
                sock.close()


class ListeningSite(web.BaseSite):
    """An aiohttp site on sockets of our own, used like ``web.TCPSite``: binds
    :func:`listening_sockets` and serves them with the server :meth:`_make_server` builds
    (:class:`GatewayServer` here, the PROXY protocol's server in ``_proxy_protocol``)."""

    __slots__ = ("_count_close", "_host", "_limits", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        limits: ConnectionLimits,
        count_close: CloseCounter = lambda _reason: None,
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._limits = limits
        self._count_close = count_close
        self._reuse_port = reuse_port

    @property
    def port(self) -> int:
        """The bound port once started (useful with port 0), else the requested one."""
        # GatewayServer and ProxyProtocolServer have asyncio.Server's `sockets`; the base
        # class aiohttp types `_server` with does not.
        sockets = getattr(self._server, "sockets", None) or ()
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return str(URL.build(scheme=scheme, host=self._host or "0.0.0.0", port=self.port))

    def _make_server(
        self, server: web.Server, sockets: list[socket.socket]
    ) -> asyncio.AbstractServer:
        raise NotImplementedError

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # BaseSite.__init__ checked that the runner is set up
        sockets = listening_sockets(
            self._host, self._port, backlog=self._backlog, reuse_port=self._reuse_port
        )
        self._server = self._make_server(server, sockets)
        await self._server.start_serving()


class GatewaySite(ListeningSite):
    """The site of every HTTPS listener without the PROXY protocol."""

    __slots__ = ()

    def _make_server(
        self, server: web.Server, sockets: list[socket.socket]
    ) -> asyncio.AbstractServer:
        return GatewayServer(
            sockets,
            server=server,
            ssl_context=self._ssl_context,
            limits=self._limits,
            count_close=self._count_close,
            backlog=self._backlog,
        )


def listening_sockets(
    host: str, port: int, *, backlog: int, reuse_port: bool
) -> list[socket.socket]:
    """Bound, listening sockets for every address of ``host``, set up as asyncio's
    ``create_server`` does (SO_REUSEADDR; IPv6 sockets IPv6-only; SO_REUSEPORT on request)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
