"""The HTTPS listener behind an L4 balancer that speaks the PROXY protocol (``proxy_protocol``).

HAProxy in TCP passthrough mode (deploy/haproxy/haproxy.cfg) leaves TLS and the client
certificate end to end, so the gateway's TCP peer is the balancer. With ``send-proxy-v2``
the balancer writes a PROXY header (gateway/tls/_proxy_header.py) before the client's first
byte; this module reads it, then does the TLS handshake and hands the connection to
aiohttp with the client's address as ``peername``.

Per accepted connection (:meth:`ProxyProtocolServer._admit`):

1. SECURITY: the TCP peer must lie in ``gateway.trusted_proxies``; anyone else could name
   any address in the header. Otherwise the connection is closed at once, before TLS.
2. The header must be complete within ``proxy_protocol_timeout``, valid and at most
   :data:`~gateway.tls._proxy_header.V2_MAX_LENGTH` bytes; otherwise the connection closes,
   before TLS, with one log line (peer address and the problem; never the bytes).
3. TLS starts right after the header: ``loop.connect_accepted_socket(…, ssl=context)``,
   the same handshake (and the same TLS hooks of gateway/tls/_context.py) as ``create_server``.
4. aiohttp's request handler gets the TLS transport wrapped in :class:`ProxiedTransport`,
   whose ``get_extra_info("peername")`` is the client's address (``PROXY UNKNOWN`` and v2
   LOCAL: the balancer's own) and ``get_extra_info("proxy_peername")`` the balancer's.
   ``request.remote``, ``gateway.tls._trusted_peers.peer_text`` (X-Forwarded-For to the upstream)
   and ``client_address`` (login throttling, login history) all read ``peername``.

Why not ``create_server`` plus ``loop.start_tls``: a protocol's transport reads whatever
has arrived, usually the header and the ClientHello in one segment, and ``start_tls``
cannot be given those bytes back; it also reads application data before the caller can
attach aiohttp's handler. Here the header is read from the socket itself with
``MSG_PEEK`` and exactly its length consumed, so the TLS layer finds the ClientHello
where it would be without a balancer. All of it is plain event-loop API (sock reads via
``add_reader``, ``connect_accepted_socket``), so asyncio's loop and uvloop both work,
and asyncio's TLS transport keeps the 16 KiB read buffer (gateway.tls._workers).

SECURITY, which headers are believed: behind the PROXY protocol the party that wrote the
HTTP request is the client named in the header; the balancer relays TCP and cannot have
added a header inside end-to-end TLS. So X-Forwarded-* and terminator certificate
headers are judged by the *client's* address (the ``peername`` above) against
``trusted_proxies``, exactly as for a client connecting directly; the balancer's own
address is trusted only to write the PROXY header. Judging them by the balancer's
address would let every client plant an X-Forwarded-For and pick its throttling bucket.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any, cast

from aiohttp import web

from gateway._log_safety import log_safe
from gateway._networks import IPNetwork
from gateway.tls._listener import (
    CloseCounter,
    ConnectionLimits,
    ListeningSite,
    guarded_protocol_factory,
)
from gateway.tls._proxy_header import (
    V1_MAX_LENGTH,
    ProxyHeader,
    ProxyHeaderInvalid,
    parse_proxy_header,
)
from gateway.tls._trusted_peers import is_trusted_address

__all__ = [
    "PROXY_PEERNAME",
    "ProxiedTransport",
    "ProxyProtocolServer",
    "ProxyProtocolSite",
]

log = logging.getLogger("gateway.proxy_protocol")

PROXY_PEERNAME = "proxy_peername"
"""``transport.get_extra_info(PROXY_PEERNAME)``: the balancer that sent the PROXY header."""
ACCEPT_RETRY_DELAY = 1.0  # out of file descriptors: asyncio's own accept loop waits 1 s too

Peername = tuple[str, int] | tuple[str, int, int, int]
ProtocolFactory = Callable[[], asyncio.BaseProtocol]


async def read_proxy_header(sock: socket.socket, loop: asyncio.AbstractEventLoop) -> ProxyHeader:
    """Read the PROXY header from a non-blocking socket, consuming exactly its bytes.

    Bytes are peeked (``MSG_PEEK``) and consumed only once they are known to belong to
    the header, so the first byte left in the socket is the client's own. The caller
    bounds the time (``asyncio.timeout``).

    Raises:
        ProxyHeaderInvalid: not a valid header, or the connection ended before one.
        OSError: the connection broke.
    """
    seen = b""
    want = V1_MAX_LENGTH  # enough to tell the versions apart and to hold any v1 line
    while True:
        peeked = await _peek(sock, want, loop)
        if not peeked:
            raise ProxyHeaderInvalid("the connection ended before the header was complete")
        result = parse_proxy_header(seen + peeked)
        if isinstance(result, ProxyHeader):
            _consume(sock, result.length - len(seen))
            return result
        # Incomplete: every byte so far is header, so taking them cannot eat client data,
        # and the next peek waits for new bytes instead of spinning on the same ones.
        _consume(sock, len(peeked))
        seen += peeked
        want = result.at_most


async def _peek(sock: socket.socket, size: int, loop: asyncio.AbstractEventLoop) -> bytes:
    while True:
        try:
            return sock.recv(size, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            pass
        readable = loop.create_future()
        loop.add_reader(sock.fileno(), _set_done, readable)
        try:
            await readable
        finally:
            loop.remove_reader(sock.fileno())


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _consume(sock: socket.socket, size: int) -> None:
    while size > 0:  # the bytes were peeked, so they are there: no waiting
        chunk = sock.recv(size)
        if not chunk:
            raise ProxyHeaderInvalid("the connection ended inside the header")
        size -= len(chunk)


def _peername(source: tuple[str, int]) -> Peername:
    host, port = source
    # The shape a socket reports: 4-tuple for IPv6, as aiohttp and gateway.tls._trusted_peers
    # expect.
    return (host, port, 0, 0) if ":" in host else (host, port)


class ProxiedTransport(asyncio.Transport):
    """A connection's transport whose ``peername`` is the client named in the PROXY header.

    Everything else is the wrapped transport's (asyncio's or uvloop's TLS transport):
    ``ssl_object``, ``peercert``, ``socket``, ``sockname`` and every write and flow-control
    call. Owned by the connection: it lives as long as aiohttp's handler holds it.
    """

    __slots__ = ("_own", "_transport")

    def __init__(
        self, transport: asyncio.Transport, *, peername: Peername, proxy_peername: Any
    ) -> None:
        super().__init__()
        self._own: dict[str, Any] = {"peername": peername, PROXY_PEERNAME: proxy_peername}
        self._transport = transport

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._own:
            return self._own[name]
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()


class _HandOver(asyncio.Protocol):
    """The protocol ``connect_accepted_socket`` starts with, for one call: after the
    handshake it attaches aiohttp's handler to the TLS transport (no further hop per
    read) and gives the handler the :class:`ProxiedTransport`."""

    def __init__(self, handler_factory: ProtocolFactory, peername: Peername, balancer: Any) -> None:
        self._handler_factory = handler_factory
        self._peername = peername
        self._balancer = balancer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        real = cast(asyncio.Transport, transport)
        handler = self._handler_factory()  # only now: a failed handshake costs no handler
        real.set_protocol(handler)
        handler.connection_made(
            ProxiedTransport(real, peername=self._peername, proxy_peername=self._balancer)
        )


class ProxyProtocolServer(asyncio.AbstractServer):
    """Accepts on listening sockets, admits connections that start with a PROXY header
    from a trusted peer, and hands them to ``protocol_factory`` over TLS.

    Owns the listening sockets and the connections still in their header or handshake;
    a handed-over connection belongs to aiohttp (its ``Server`` drains it on shutdown).
    """

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        *,
        protocol_factory: ProtocolFactory,
        ssl_context: ssl.SSLContext | None,
        trusted_proxies: Sequence[IPNetwork],
        header_timeout: float,
        backlog: int,
        tls_handshake_timeout: float = 60.0,
    ) -> None:
        if not trusted_proxies:
            raise ValueError("the PROXY protocol needs trusted_proxies (the balancers)")
        self._loop = asyncio.get_running_loop()
        self._sockets = tuple(sockets)
        self._protocol_factory = protocol_factory
        self._ssl_context = ssl_context
        self._trusted = tuple(trusted_proxies)
        self._header_timeout = header_timeout
        self._backlog = backlog
        self._tls_handshake_timeout = tls_handshake_timeout
        self._admitting: set[asyncio.Task[None]] = set()
        self._serving = False
        self._closed: asyncio.Future[None] = self._loop.create_future()
        for listener in self._sockets:
            listener.setblocking(False)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return self._sockets if self._serving else ()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if self._serving:
            return
        self._serving = True
        for listener in self._sockets:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    def close(self) -> None:
        """Stop accepting now (the listening sockets close), and drop connections that have
        not finished their header or handshake."""
        if not self._closed.done():
            self._closed.set_result(None)  # serve_forever returns
        if not self._serving:
            return
        self._serving = False
        for listener in self._sockets:
            self._loop.remove_reader(listener.fileno())
            listener.close()
        for task in self._admitting:
            task.cancel()

    async def serve_forever(self) -> None:
        """Accept until :meth:`close` (asyncio.Server's contract; cancelling it closes the
        server). aiohttp's runner only calls :meth:`start_serving`."""
        await self.start_serving()
        try:
            await asyncio.shield(self._closed)
        finally:
            self.close()

    async def wait_closed(self) -> None:
        if self._admitting:
            await asyncio.gather(*self._admitting, return_exceptions=True)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(self._backlog):  # bounded, like asyncio's own accept loop
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                # Out of file descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): the
                # listener stays readable, so waiting is the only way not to spin.
                log.error(
                    "cannot accept connections (%s); trying again in %.0f s",
                    exc.strerror or exc,
                    ACCEPT_RETRY_DELAY,
                )
                self._loop.remove_reader(listener.fileno())
                self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume_accepting, listener)
                return
            sock.setblocking(False)
            task = self._loop.create_task(self._admit(sock, address))
            self._admitting.add(task)
            task.add_done_callback(self._admitting.discard)

    def _resume_accepting(self, listener: socket.socket) -> None:
        if self._serving:
            self._loop.add_reader(listener.fileno(), self._accept, listener)

    async def _admit(self, sock: socket.socket, address: Any) -> None:
        peer = str(address[0])
        handed_over = False
        try:
            if not is_trusted_address(peer, self._trusted):
                # SECURITY: only a configured balancer may say who the client is.
                log.warning(
                    "closed a connection from %s before TLS: not in gateway.trusted_proxies "
                    "(with proxy_protocol on, only the balancers may connect)",
                    peer,
                )
                return
            try:
                async with asyncio.timeout(self._header_timeout):
                    header = await read_proxy_header(sock, self._loop)
            except TimeoutError:
                log.warning(
                    "closed a connection from %s before TLS: no complete PROXY header "
                    "within %g s (gateway.proxy_protocol_timeout)",
                    peer,
                    self._header_timeout,
                )
                return
            except ProxyHeaderInvalid as exc:
                log.warning("closed a connection from %s before TLS: %s", peer, log_safe(exc))
                return
            peername = _peername(header.source) if header.source else address
            handed_over = True  # from here on the loop's transport owns (and closes) sock
            await self._loop.connect_accepted_socket(
                lambda: _HandOver(self._protocol_factory, peername, address),
                sock,
                ssl=self._ssl_context,
                ssl_handshake_timeout=self._tls_handshake_timeout if self._ssl_context else None,
            )
        except OSError as exc:
            # A reset during the header, or a failed TLS handshake (as with create_server,
            # where asyncio does not log those either).
            log.debug("connection from %s ended before it was served: %r", peer, exc)
        finally:
            if not handed_over:
                sock.close()


class ProxyProtocolSite(ListeningSite):
    """aiohttp site for :class:`ProxyProtocolServer`; used like ``web.TCPSite``."""

    __slots__ = ("_header_timeout", "_trusted")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        trusted_proxies: Sequence[IPNetwork],
        header_timeout: float,
        backlog: int = 128,
        reuse_port: bool = False,
        limits: ConnectionLimits | None = None,
        count_close: CloseCounter = lambda _reason: None,
    ) -> None:
        if not trusted_proxies:
            raise ValueError("the PROXY protocol needs trusted_proxies (the balancers)")
        super().__init__(
            runner,
            host,
            port,
            ssl_context=ssl_context,
            limits=limits or ConnectionLimits(),
            count_close=count_close,
            backlog=backlog,
            reuse_port=reuse_port,
        )
        self._trusted = tuple(trusted_proxies)
        self._header_timeout = header_timeout

    def _make_server(
        self, server: web.Server, sockets: list[socket.socket]
    ) -> asyncio.AbstractServer:
        return ProxyProtocolServer(
            sockets,
            # The same first-request, head and keep-alive bounds as GatewaySite.
            protocol_factory=guarded_protocol_factory(server, self._limits, self._count_close),
            ssl_context=self._ssl_context,
            trusted_proxies=self._trusted,
            header_timeout=self._header_timeout,
            backlog=self._backlog,
            tls_handshake_timeout=self._limits.tls_handshake_timeout,
        )
