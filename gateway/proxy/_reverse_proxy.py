"""The reverse proxy: one request (or WebSocket) from the client to the upstream and back.

Bodies are streamed both ways through aiohttp's flow-controlled streams: the request body
is handed to the client session as the server's StreamReader (reading pauses the socket
when its buffer is full) and the response body is written chunk by chunk with
``StreamResponse.write`` (which waits for the socket to drain). Memory per request is a few
64 KiB buffers however large the body is.

Errors before the response has started become :class:`UpstreamUnavailable` (502) or
:class:`UpstreamTimeout` (504), which the error middleware renders as pages. Once the
status line has been sent a page is impossible; the client connection is then aborted so
the broker's browser sees a broken download rather than a silently truncated file.

A WebSocket is relayed by two tasks (one per direction) and, when the app hands over a
``websocket_guard`` (``gateway.proxy._websocket_guard``), watched by a third: every
``guard.interval`` seconds it asks ``await guard.check(active)`` whether the socket may
stay open (``active``: the client sent a message since the last check). A reason closes
both legs with 1008 (policy violation) and that reason; a failing check closes them with
1011. The proxy knows nothing of sessions or certificates; the guard knows nothing of
frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import StreamReader, WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from gateway._errors import UpstreamTimeout, UpstreamUnavailable
from gateway._log_safety import log_safe
from gateway._metrics import GatewayMetrics
from gateway._networks import IPNetwork
from gateway.proxy._header_rewrite import downstream_response_headers, upstream_request_headers
from gateway.proxy._html_insert import can_insert, insert_after_body
from gateway.proxy._http1_pool import UpstreamResponse
from gateway.proxy._upstream import Upstream
from gateway.tls._trusted_peers import is_trusted_peer, peer_text

if TYPE_CHECKING:  # the guard is the app's; the proxy only calls it
    from gateway.proxy._websocket_guard import WebSocketGuard

log = logging.getLogger(__name__)

SMALL_BODY = 64 * 1024  # bodies up to this (with Content-Length) are sent in one write
_NO_BODY_STATUSES = frozenset({204, 304})

# aiohttp's ws_connect sets these itself; copying the browser's would clash.
_WS_HANDSHAKE_HEADERS = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
        "content-length",
    }
)
# Close codes an endpoint may send (RFC 6455 §7.4.1 and the IANA registry; 3000-4999 for
# libraries and applications); 1005/1006/1015 are "reserved, never sent", so they become 1011.
_SENDABLE_CLOSE_CODES = (
    frozenset(range(1000, 1004)) | frozenset(range(1007, 1015)) | frozenset(range(3000, 5000))
)
POLICY_VIOLATION = 1008  # RFC 6455 §7.4.1: the session or certificate no longer allows it
INTERNAL_ERROR = 1011  # RFC 6455 §7.4.1: the guard itself failed (e.g. store unreachable)
_MAX_CLOSE_REASON = 123  # RFC 6455 §5.5: control frame payload ≤ 125 bytes, 2 are the code


def upstream_url(upstream: Upstream, path_qs: str) -> URL:
    """``path_qs`` (an already-encoded request target) appended to the upstream base URL."""
    base = str(upstream.base_url).rstrip("/")
    # encoded=True: forward the target exactly as received (or as the route policy
    # normalised it); re-quoting could turn %2F into / and reach a different resource.
    return URL(base + path_qs, encoded=True)


def _is_websocket_upgrade(request: web.Request) -> bool:
    connection = request.headers.get("Connection", "").lower()
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in (token.strip() for token in connection.split(","))
    )


async def proxy_request(
    request: web.Request,
    *,
    upstream: Upstream,
    identity_headers: Mapping[str, str],
    trusted_proxies: Sequence[IPNetwork] = (),
    strip_headers: Collection[str] = (),
    gateway_cookies: Collection[str] = (),
    path_qs: str | None = None,
    metrics: GatewayMetrics | None = None,
    websocket_guard: WebSocketGuard | None = None,
    html_insert: str | None = None,
) -> web.StreamResponse:
    """Forward ``request`` to the upstream and stream the answer back.

    Args:
        request: the client's request.
        upstream: the pool (``app[UPSTREAM_KEY]``).
        identity_headers: the gateway's identity headers (``X-Brokergate-…``) for this
            request; empty for an anonymous request. Client-sent copies are always removed.
        trusted_proxies: peers whose X-Forwarded-* headers are kept and extended.
        strip_headers: further request headers never to forward (e.g. the terminator's
            client-certificate header).
        gateway_cookies: the gateway's own cookie names (the configured session cookie),
            removed from the Cookie header like every ``__Host-bg…``/``__Host-brokergate…``.
        path_qs: the request target to forward (e.g. the route policy's normalised path);
            defaults to the raw target the client sent.
        metrics: where to record upstream latency.
        websocket_guard: for a WebSocket upgrade, the periodic "still allowed?" of the
            session that opened it (None: the socket lives as long as its two ends want).
        html_insert: a fragment to put after the ``<body>`` tag of an HTML answer
            (``gateway.proxy._html_insert``); the portal is then asked for an uncompressed
            answer.

    Raises:
        UpstreamUnavailable: the upstream could not be reached or broke the exchange.
        UpstreamTimeout: it did not connect or answer within the configured timeouts.
    """
    headers = upstream_request_headers(
        request.headers,
        identity_headers=identity_headers,
        peer=peer_text(request),
        peer_trusted=is_trusted_peer(request, trusted_proxies),
        scheme=request.scheme,
        host=request.headers.get("Host"),
        strip=strip_headers,
        gateway_cookies=gateway_cookies,
    )
    target = path_qs if path_qs is not None else request.raw_path
    if _is_websocket_upgrade(request):
        url = upstream_url(upstream, target)
        return await _proxy_websocket(
            request, upstream=upstream, url=url, headers=headers, guard=websocket_guard
        )
    if html_insert is not None:
        headers["Accept-Encoding"] = "identity"  # a compressed page could not get the fragment
    return await _proxy_http(
        request,
        upstream=upstream,
        target=target,
        headers=headers,
        metrics=metrics,
        gateway_cookies=gateway_cookies,
        html_insert=html_insert,
    )


async def _proxy_http(
    request: web.Request,
    *,
    upstream: Upstream,
    target: str,
    headers: CIMultiDict[str],
    metrics: GatewayMetrics | None,
    gateway_cookies: Collection[str],
    html_insert: str | None = None,
) -> web.StreamResponse:
    started = time.monotonic()
    if "Host" not in headers:  # an HTTP/1.0 client sent none; HTTP/1.1 requires one
        headers["Host"] = upstream.host_header
    body: bytes | StreamReader | None = None
    request_length = request.content_length
    if request.body_exists:
        if request_length is not None and request_length <= SMALL_BODY:
            # Known and small: read it so head and body go out in one write.
            body = await request.read()
        else:
            # request.content is the server's flow-controlled StreamReader: the pool reads
            # it chunk by chunk, so an upload is never held in memory.
            body = request.content
    try:
        upstream_response = await upstream.pool.request(
            request.method,
            upstream.path_prefix + target,
            headers.items(),
            body=body,
            content_length=request_length,
        )
    except TimeoutError as exc:
        _observe(metrics, started, None)
        raise UpstreamTimeout(f"{request.method} {target}: no answer in time ({exc})") from exc
    except ConnectionError as exc:  # UpstreamConnectError, UpstreamProtocolError, resets
        _observe(metrics, started, None)
        raise UpstreamUnavailable(f"{request.method} {target}: {exc}") from exc
    _observe(metrics, started, upstream_response.status)
    try:
        answer_length = upstream_response.content_length
        if (
            html_insert is not None
            and request.method == "GET"
            and can_insert(upstream_response.status, upstream_response.headers, answer_length)
        ):
            return await _small_response(
                request, upstream_response, target, gateway_cookies, html_insert=html_insert
            )
        if (
            answer_length is not None
            and answer_length <= SMALL_BODY
            and request.method != "HEAD"
            and upstream_response.status not in _NO_BODY_STATUSES
        ):
            return await _small_response(request, upstream_response, target, gateway_cookies)
        return await _streamed_response(request, upstream_response, target, gateway_cookies)
    finally:
        upstream_response.release()


async def _small_response(
    request: web.Request,
    upstream_response: UpstreamResponse,
    target: str,
    gateway_cookies: Collection[str],
    *,
    html_insert: str | None = None,
) -> web.StreamResponse:
    """A body of known, small length: read it, send status, headers and body in one write.

    Most portal pages are a few KB; one TLS record instead of three (headers, body, end)
    is the largest single saving per request. Memory stays bounded by SMALL_BODY (by
    ``MAX_HTML`` for a page that gets ``html_insert``).
    """
    try:
        body = await upstream_response.read()
    except TimeoutError as exc:  # nothing sent to the client yet: this can still be a page
        raise UpstreamTimeout(f"{request.method} {target}: body not in time ({exc})") from exc
    except ConnectionError as exc:
        raise UpstreamUnavailable(f"{request.method} {target}: body broke off ({exc})") from exc
    drop: tuple[str, ...] = ("content-length",)
    inserted = insert_after_body(body, html_insert) if html_insert is not None else None
    if inserted is not None:
        # The page is no longer the portal's: its validators would let a browser keep the
        # banner after it is gone (a 304 on the portal's ETag), so none, and no caching.
        body = inserted
        drop += ("etag", "last-modified", "cache-control")
    headers = downstream_response_headers(
        upstream_response.headers, drop=drop, gateway_cookies=gateway_cookies
    )
    if inserted is not None:
        headers["Cache-Control"] = "no-store"
    return web.Response(
        status=upstream_response.status,
        reason=upstream_response.reason,
        # aiohttp sets Content-Length from the body (the new value when the banner is in).
        headers=headers,
        body=body,
    )


async def _streamed_response(
    request: web.Request,
    upstream_response: UpstreamResponse,
    target: str,
    gateway_cookies: Collection[str],
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=upstream_response.status,
        reason=upstream_response.reason,
        headers=downstream_response_headers(
            upstream_response.headers, gateway_cookies=gateway_cookies
        ),
    )
    try:
        await response.prepare(request)
    except ConnectionResetError:  # the client left while the upstream was answering
        return response
    try:
        while chunk := await upstream_response.read_chunk():
            await response.write(chunk)
        await response.write_eof()
    except (TimeoutError, ConnectionError, aiohttp.ClientError) as exc:
        # The upstream broke off, stalled, or the client left (aiohttp's
        # ClientConnectionResetError). Status already sent: no error page possible.
        # Abort so the browser notices.
        log.info(
            "%s %s broke off mid-body: %s",
            log_safe(request.method),
            log_safe(target),
            log_safe(repr(exc)),
        )
        if request.transport is not None:
            request.transport.abort()
    return response


def _observe(metrics: GatewayMetrics | None, started: float, status: int | None) -> None:
    if metrics is not None:
        metrics.observe_upstream(time.monotonic() - started, status=status)


async def _proxy_websocket(
    request: web.Request,
    *,
    upstream: Upstream,
    url: URL,
    headers: CIMultiDict[str],
    guard: WebSocketGuard | None,
) -> web.StreamResponse:
    """Connect upstream first (so a dead upstream is a 502 page), then relay both ways."""
    protocols = tuple(
        token.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for token in value.split(",")
        if token.strip()
    )
    ws_headers = CIMultiDict(
        (name, value)
        for name, value in headers.items()
        if name.lower() not in _WS_HANDSHAKE_HEADERS
    )
    ws_url = url.with_scheme("wss" if url.scheme == "https" else "ws")
    try:
        upstream_ws = await upstream.client.ws_connect(
            ws_url,
            headers=ws_headers,
            protocols=protocols,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
            autoping=True,
            max_msg_size=0,  # relay whatever the two ends agree on; each end enforces its own
        )
    except TimeoutError as exc:
        raise UpstreamTimeout(f"WebSocket {url}: no answer in time ({exc!r})") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(f"WebSocket {url}: {exc!r}") from exc
    async with upstream_ws:
        client_ws = web.WebSocketResponse(
            protocols=(upstream_ws.protocol,) if upstream_ws.protocol else (),
            autoping=True,
            max_msg_size=0,
        )
        await client_ws.prepare(request)
        activity = _Activity()
        to_upstream = asyncio.create_task(_relay(client_ws, upstream_ws, activity))
        to_client = asyncio.create_task(_relay(upstream_ws, client_ws))
        tasks: set[asyncio.Task[str | None]] = {to_upstream, to_client}
        watchdog = asyncio.create_task(_watch(guard, activity)) if guard is not None else None
        if watchdog is not None:
            tasks.add(watchdog)
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if watchdog is not None and watchdog in done:
            done.discard(watchdog)
            code, reason = _guard_verdict(watchdog, url)
            if code is not None:
                # SECURITY: the session that opened the socket is over: both legs go, so
                # the upstream stops acting for a broker who is no longer there.
                await _close_both(client_ws, upstream_ws, code, reason)
                return client_ws
        for task in done:
            task.result()  # surface unexpected errors in the log
        if not client_ws.closed:
            await client_ws.close(code=_close_code(upstream_ws.close_code))
        return client_ws


def _close_code(code: int | None) -> int:
    return code if code in _SENDABLE_CLOSE_CODES else 1011 if code is not None else 1000


class _Activity:
    """Whether the client sent a message since the guard last looked (one flag, no lock:
    the relay and the watchdog run on the same event loop)."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        self.seen = False

    def take(self) -> bool:
        seen, self.seen = self.seen, False
        return seen


async def _watch(guard: WebSocketGuard, activity: _Activity) -> str:
    """Ask the guard every ``guard.interval`` seconds; return its reason once it says no."""
    while True:
        await asyncio.sleep(guard.interval)
        reason = await guard.check(activity.take())
        if reason is not None:
            return reason


def _guard_verdict(watchdog: asyncio.Task[str], url: URL) -> tuple[int | None, str]:
    """The close code and reason a finished watchdog asks for (None: it was cancelled)."""
    if watchdog.cancelled():
        return None, ""
    exc = watchdog.exception()
    if exc is not None:
        # Fail closed: without an answer the socket cannot be known to be allowed.
        log.error("WebSocket %s: the guard failed, closing: %r", log_safe(url), exc)
        return INTERNAL_ERROR, "server error"
    reason = watchdog.result()
    log.info("WebSocket %s closed by the gateway: %s", log_safe(url), log_safe(reason))
    return POLICY_VIOLATION, reason


async def _close_both(
    client_ws: web.WebSocketResponse,
    upstream_ws: aiohttp.ClientWebSocketResponse,
    code: int,
    reason: str,
) -> None:
    """Close both legs at once (a slow client must not delay the upstream's close)."""
    message = reason.encode()[:_MAX_CLOSE_REASON]
    results = await asyncio.gather(
        client_ws.close(code=code, message=message),
        upstream_ws.close(code=code, message=message),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):  # the peer was gone already: nothing to do
            log.info("WebSocket close after %s: %r", log_safe(repr(reason)), result)


async def _relay(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    activity: _Activity | None = None,
) -> None:
    """Copy messages from ``source`` to ``sink`` until ``source`` closes; then close ``sink``.

    ``activity`` is marked on every data message (the client's direction only: a broker
    sending is activity, an upstream pushing is not).
    """
    async for message in source:
        if sink.closed:
            return
        if message.type is WSMsgType.TEXT:
            if activity is not None:
                activity.seen = True
            await sink.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            if activity is not None:
                activity.seen = True
            await sink.send_bytes(message.data)
        elif message.type is WSMsgType.ERROR:
            break
    if not sink.closed:
        await sink.close(code=_close_code(source.close_code))
