"""Which peers are trusted proxies (terminators, load balancers) whose headers we believe.

Shared by the reverse proxy (X-Forwarded-* chain) and terminator mode (client-certificate
header). The peer is the connection's ``peername``, never anything an HTTP header says:
the TCP peer, or, on a PROXY protocol listener (``gateway.proxy_protocol``), the client
address that a balancer in ``trusted_proxies`` announced before TLS. In that case the
balancer relayed TCP only and wrote none of the HTTP headers inside the end-to-end TLS,
so they are judged by the client's address like those of a client connecting directly
(gateway/tls/_proxy_protocol.py explains why the balancer's address must not count here).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

from gateway._networks import IPAddress, IPNetwork


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # A dual-stack socket reports 127.0.0.1 as ::ffff:127.0.0.1; match it as IPv4.
        return address.ipv4_mapped
    return address


def peer_address(request: web.Request) -> IPAddress | None:
    """The peer's address (IPv4-mapped IPv6 unwrapped), or None for a unix socket."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if not isinstance(peername, tuple) or not peername:
        return None
    return _address(peername[0])


def is_trusted_address(text: str, networks: Sequence[IPNetwork]) -> bool:
    """True only if the address ``text`` (IPv4-mapped IPv6 unwrapped) lies in ``networks``."""
    address = _address(text)
    return address is not None and any(address in network for network in networks)


def peer_text(request: web.Request) -> str | None:
    """The peer's address as text for X-Forwarded-For (IPv4-mapped IPv6 unwrapped).

    String work only: this runs on every proxied request, and parsing into an
    ``ipaddress`` object costs more than the rest of the header rewrite.
    """
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if not isinstance(peername, tuple) or not peername:
        return None
    host = str(peername[0])
    return host[7:] if host.startswith("::ffff:") and "." in host else host


def is_trusted_peer(request: web.Request, networks: Sequence[IPNetwork]) -> bool:
    """True only if the connection's peer lies in one of ``networks``."""
    if not networks:
        return False
    address = peer_address(request)
    return address is not None and any(address in network for network in networks)


def client_address(request: web.Request, trusted: Sequence[IPNetwork]) -> str | None:
    """The client's address for rate limits and audit: the TCP peer, or, when the peer is a
    trusted proxy, the address that proxy put last in X-Forwarded-For.

    SECURITY: only the last element is the trusted proxy's own word (nginx
    ``$remote_addr`` / ``$proxy_add_x_forwarded_for``, HAProxy ``option forwardfor`` and
    Envoy all append); earlier ones are whatever the client sent. Without this, every
    client behind a terminator shares its address, and one client's failures lock
    everyone out.
    """
    peer = peer_text(request)
    if not trusted or not is_trusted_peer(request, trusted):
        return peer
    values = request.headers.getall("X-Forwarded-For", ())
    if not values:
        return peer
    last = values[-1].split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(last))
    except ValueError:
        return peer
