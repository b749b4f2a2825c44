"""The upstream connections of one app, owned by its cleanup_ctx.

Plain HTTP requests go through ``pool`` (gateway.proxy._http1_pool, a lean keep-alive
pool); WebSocket upgrades through ``client`` (an aiohttp ClientSession, whose WebSocket
client we keep).

Usage::

    app.cleanup_ctx.append(upstream_context(settings))
    ...
    upstream = request.app[UPSTREAM_KEY]
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from yarl import URL

from gateway._settings import GatewaySettings
from gateway.proxy._http1_pool import UpstreamPool

# Idle upstream connections are closed after this, below the shortest common keep-alive
# timeout of upstream servers (Apache httpd: 5 s), so a request rarely meets a connection
# the upstream is just closing (and an idempotent one is retried when it does).
IDLE_TIMEOUT_SECONDS = 4.0


@dataclass(frozen=True, kw_only=True)
class Upstream:
    """Where requests go and the pool they go through. The cleanup_ctx owns ``client``."""

    base_url: URL  # scheme://host:port with an optional path prefix, no query
    path_prefix: str  # the base URL's path without its trailing "/", still encoded
    host_header: str  # Host for requests that came without one (HTTP/1.0 clients)
    pool: UpstreamPool  # plain HTTP requests
    client: aiohttp.ClientSession  # WebSocket upgrades

    async def close(self) -> None:
        await self.pool.close()
        await self.client.close()


UPSTREAM_KEY = web.AppKey("brokergate_upstream", Upstream)


def make_upstream(settings: GatewaySettings) -> Upstream:
    """Open the connections (call inside a running event loop); the caller awaits
    :meth:`Upstream.close`."""
    upstream_url = settings.upstream_url
    connect_timeout = settings.upstream_connect_timeout
    read_timeout = settings.upstream_read_timeout
    pool_size = settings.upstream_pool_size
    base_url = URL(upstream_url)
    if base_url.scheme not in ("http", "https") or not base_url.host:
        raise ValueError(f"upstream_url {upstream_url!r} must be http(s)://host[:port][/prefix]")
    if base_url.query_string or base_url.fragment:
        raise ValueError(f"upstream_url {upstream_url!r} must not have a query or fragment")
    connector = aiohttp.TCPConnector(
        limit=pool_size,
        limit_per_host=pool_size,
        # The upstream is one fixed host: cache its address for the life of the process
        # instead of resolving it again every 10 s (aiohttp's default).
        ttl_dns_cache=None,
    )
    timeout = aiohttp.ClientTimeout(
        total=None,  # a long download is fine as long as bytes keep coming
        connect=connect_timeout.total_seconds(),  # pool wait + TCP connect
        sock_connect=connect_timeout.total_seconds(),
        sock_read=read_timeout.total_seconds(),  # headers, and the gap between body chunks
    )
    client = aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,  # set once here: a per-request ClientTimeout costs on every request
        # SECURITY: never keep cookies in the shared pool; a Set-Cookie for one broker
        # would otherwise be sent upstream on the next broker's request.
        cookie_jar=aiohttp.DummyCookieJar(),
        # Bodies pass through byte for byte: Content-Encoding and Content-Length stay true.
        auto_decompress=False,
        # Do not invent headers the browser did not send (User-Agent, Accept, Accept-Encoding).
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        # Upstream URLs are built from already-encoded request targets; keep them as sent.
        requote_redirect_url=False,
    )
    pool = UpstreamPool(
        base_url,
        size=pool_size,
        connect_timeout=connect_timeout.total_seconds(),
        read_timeout=read_timeout.total_seconds(),
        idle_timeout=IDLE_TIMEOUT_SECONDS,
    )
    return Upstream(
        base_url=base_url,
        path_prefix=base_url.raw_path.rstrip("/"),
        host_header=base_url.raw_authority,
        pool=pool,
        client=client,
    )


def upstream_context(
    settings: GatewaySettings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that opens the pool under ``app[UPSTREAM_KEY]`` and closes it on shutdown."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        upstream = make_upstream(settings)
        app[UPSTREAM_KEY] = upstream
        try:
            yield
        finally:
            await upstream.close()

    return context
