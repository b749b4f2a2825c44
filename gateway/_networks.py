"""IP networks from configuration (``trusted_proxies``), parsed once: pure, no I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["IPAddress", "IPNetwork", "parse_networks"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(networks: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``("127.0.0.1", "10.0.0.0/8")`` → networks; a bare address is a /32 or /128.

    Raises:
        ValueError: naming the entry that is not an address or network.
    """
    parsed = []
    for text in networks:
        try:
            parsed.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network (CIDR)") from None
    return tuple(parsed)
