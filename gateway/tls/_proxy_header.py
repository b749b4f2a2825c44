"""The PROXY protocol header (HAProxy's proxy-protocol.txt, versions 1 and 2), sans I/O.

An L4 load balancer in TCP passthrough mode (HAProxy ``send-proxy-v2``) writes this
header before the first byte of the client's stream, so that the gateway learns the
client's address although the TCP peer is the balancer. :func:`parse_proxy_header` looks
at the first bytes of a connection and says: here is the complete header (and how many
bytes it took), or it may need up to N more bytes, or this is not a valid header
(:class:`ProxyHeaderInvalid`). The reader in ``gateway.tls._proxy_protocol`` uses the length
to consume exactly the header and not one byte of the TLS ClientHello behind it.

Hand-written, not a library: the one maintained Python package (``proxy-protocol``) has a
single maintainer and parses loosely (``int()`` takes ``+1`` or ``1_0`` as a port, a v1
line is not bounded to 107 bytes, a v2 address block shorter than its family raises
``struct.error``); it also reads from a stream, not a buffer, so it could not tell the
length without over-reading. The format is small and exactly specified; this parser is
strict and property-tested (tests/gateway_proxy/test_proxy_header.py).

Version 1 (text): ``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`` or
``PROXY UNKNOWN ...\\r\\n``, at most 107 bytes with the CRLF (spec §2.1).
Version 2 (binary): a 12-byte signature, version/command, family/protocol, a 16-bit
length, then the address block and TLVs (spec §2.2).

``PROXY UNKNOWN``, the v2 LOCAL command (HAProxy's health checks), and v2 families or
protocols without an IP address (UNSPEC, UNIX, DGRAM) carry no client address: the
connection is accepted and keeps its real peer (spec §2.2: "the receiver must accept
this connection as valid and must use the real connection endpoints").
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "V1_MAX_LENGTH",
    "V2_MAX_LENGTH",
    "V2_SIGNATURE",
    "NeedMore",
    "ProxyHeader",
    "ProxyHeaderInvalid",
    "parse_proxy_header",
]

V1_PREFIX = b"PROXY "
V1_MAX_LENGTH = 107  # spec §2.1: the longest TCP6 line with its CRLF
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # spec §2.2; starts with CRLF, so never a v1 line
_V2_FIXED = 16  # signature, version/command, family/protocol, length
# Spec §2.2 allows 16 + 65535 bytes. A header is held in memory before TLS starts, by a
# connection nobody has authenticated yet (the peer check comes first, but a trusted
# balancer may be misconfigured): 4 KiB bounds that and still fits the address block
# plus every TLV HAProxy sends (unique-id, authority, ssl with cert CN, netns, crc32c).
V2_MAX_LENGTH = _V2_FIXED + 4096

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_PROTO_UNSPEC, _PROTO_STREAM, _PROTO_DGRAM = 0x0, 0x1, 0x2
# Size of the address block per family (spec §2.2): two addresses and two ports.
_ADDRESS_BLOCK = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}
_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")  # decimal, no sign, no leading zeros (spec §2.1)

Address = tuple[str, int]


class ProxyHeaderInvalid(ValueError):
    """The bytes are not a PROXY protocol header the gateway accepts; the connection closes.

    The message names what was wrong, never the bytes themselves.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"invalid PROXY protocol header: {problem}")


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete header.

    Attributes:
        version: 1 (text) or 2 (binary).
        length: how many bytes the header took; the client's stream starts right after.
        source: the client's ``(address, port)``; None for ``PROXY UNKNOWN``, v2 LOCAL and
            address families without an IP address: then the connection's own peer counts.
        destination: the address the client connected to (the balancer's), or None.
    """

    version: Literal[1, 2]
    length: int
    source: Address | None = None
    destination: Address | None = None


@dataclass(frozen=True, slots=True)
class NeedMore:
    """The bytes so far begin a valid header; up to ``at_most`` more bytes complete it.

    Every byte seen so far belongs to the header, so a reader may consume them.
    """

    at_most: int


def parse_proxy_header(data: bytes) -> ProxyHeader | NeedMore:
    """Parse the PROXY header at the start of ``data`` (which may hold more bytes after it).

    Args:
        data: the first bytes of the connection (possibly fewer than a whole header).

    Returns:
        The complete header, or :class:`NeedMore` if ``data`` is a valid beginning of one.

    Raises:
        ProxyHeaderInvalid: ``data`` cannot begin a valid header (wrong signature, a line
            without CRLF within 107 bytes, a bad address or port, an unknown v2 version,
            command, family or protocol, a v2 length over :data:`V2_MAX_LENGTH` …).
    """
    if not data:
        return NeedMore(V1_MAX_LENGTH)
    if data[0] == V2_SIGNATURE[0]:
        return _parse_v2(data)
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(data)
    if data[0] == 0x16:  # a TLS handshake record: the balancer sent no header at all
        raise ProxyHeaderInvalid(
            "the connection starts with a TLS ClientHello, not a PROXY header (does the "
            "balancer send one, e.g. HAProxy `send-proxy-v2`?)"
        )
    raise ProxyHeaderInvalid("the connection does not start with a PROXY header")


# --- version 1 ----------------------------------------------------------------------------


def _parse_v1(data: bytes) -> ProxyHeader | NeedMore:
    head = data[: len(V1_PREFIX)]
    if head != V1_PREFIX[: len(head)]:
        raise ProxyHeaderInvalid("the connection does not start with a PROXY header")
    # The first LF ends the line (the client's bytes after it may hold any byte pair).
    lf = data.find(b"\n", 0, V1_MAX_LENGTH)
    if lf < 0:
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyHeaderInvalid(f"version 1 line without CRLF in {V1_MAX_LENGTH} bytes")
        return NeedMore(V1_MAX_LENGTH - len(data))
    if data[lf - 1] != 0x0D:  # lf > 0: the prefix check above put "PROXY " before it
        raise ProxyHeaderInvalid("version 1 line ends in LF without CR")
    length = lf + 1
    line = data[len(V1_PREFIX) : lf - 1]
    if line == b"UNKNOWN" or line.startswith(b"UNKNOWN "):
        # Spec §2.1: with UNKNOWN the receiver ignores the rest of the line.
        return ProxyHeader(version=1, length=length)
    fields = line.split(b" ")
    if len(fields) != 5:
        raise ProxyHeaderInvalid(
            "version 1 needs TCP4/TCP6, two addresses and two ports separated by single spaces"
        )
    family, src, dst, sport, dport = fields
    if family == b"TCP4":
        parse_address = _ipv4_text
    elif family == b"TCP6":
        parse_address = _ipv6_text
    else:
        raise ProxyHeaderInvalid("version 1 protocol must be TCP4, TCP6 or UNKNOWN")
    return ProxyHeader(
        version=1,
        length=length,
        source=(parse_address(src), _port_text(sport)),
        destination=(parse_address(dst), _port_text(dport)),
    )


def _ipv4_text(raw: bytes) -> str:
    try:
        return str(ipaddress.IPv4Address(raw.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderInvalid("version 1 TCP4 address is not a dotted IPv4 address") from None


def _ipv6_text(raw: bytes) -> str:
    try:
        text = raw.decode("ascii")
        if "%" in text:  # a zone index names an interface of the sender, not an address
            raise ValueError(text)
        return _ipv6_str(ipaddress.IPv6Address(text))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderInvalid("version 1 TCP6 address is not an IPv6 address") from None


def _ipv6_str(address: ipaddress.IPv6Address) -> str:
    # An IPv4 client behind a dual-stack balancer arrives as ::ffff:a.b.c.d; it is the
    # IPv4 client a.b.c.d (trusted_proxies, login throttling and logs compare it as such).
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else str(address)


def _port_text(raw: bytes) -> int:
    if not _PORT.fullmatch(raw) or int(raw) > 65535:
        raise ProxyHeaderInvalid("version 1 port is not a number from 0 to 65535")
    return int(raw)


# --- version 2 ----------------------------------------------------------------------------


def _parse_v2(data: bytes) -> ProxyHeader | NeedMore:
    signature = data[: len(V2_SIGNATURE)]
    if signature != V2_SIGNATURE[: len(signature)]:
        raise ProxyHeaderInvalid("the connection does not start with a PROXY header")
    if len(data) < _V2_FIXED:
        return NeedMore(V2_MAX_LENGTH - len(data))
    version_command, family_protocol, block_length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyHeaderInvalid("version 2 signature with a version other than 2")
    command = version_command & 0x0F
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderInvalid("version 2 command is neither LOCAL nor PROXY")
    family, protocol = family_protocol >> 4, family_protocol & 0x0F
    if family not in _ADDRESS_BLOCK or protocol not in (_PROTO_UNSPEC, _PROTO_STREAM, _PROTO_DGRAM):
        raise ProxyHeaderInvalid("version 2 address family or protocol is unknown")
    length = _V2_FIXED + block_length
    if length > V2_MAX_LENGTH:
        raise ProxyHeaderInvalid(f"version 2 header of {length} bytes (at most {V2_MAX_LENGTH})")
    if len(data) < length:
        return NeedMore(length - len(data))
    if command == _V2_LOCAL:
        # Spec §2.2: a LOCAL connection (health check) keeps its real endpoints; the
        # address block, whatever it says, is ignored.
        return ProxyHeader(version=2, length=length)
    addresses = _ADDRESS_BLOCK[family]
    if block_length < addresses:
        raise ProxyHeaderInvalid("version 2 length is shorter than its address block")
    _check_tlvs(data[_V2_FIXED + addresses : length])
    if family not in (_AF_INET, _AF_INET6) or protocol != _PROTO_STREAM:
        # UNSPEC, UNIX or a datagram: no IP address of a TCP client to believe.
        return ProxyHeader(version=2, length=length)
    size = 4 if family == _AF_INET else 16
    block = data[_V2_FIXED : _V2_FIXED + addresses]
    src, dst = block[:size], block[size : 2 * size]
    sport, dport = struct.unpack_from("!HH", block, 2 * size)
    if family == _AF_INET:
        source, destination = str(ipaddress.IPv4Address(src)), str(ipaddress.IPv4Address(dst))
    else:
        source = _ipv6_str(ipaddress.IPv6Address(src))
        destination = _ipv6_str(ipaddress.IPv6Address(dst))
    return ProxyHeader(
        version=2, length=length, source=(source, sport), destination=(destination, dport)
    )


def _check_tlvs(tlvs: bytes) -> None:
    """Each TLV (type, 16-bit length, value) must fit the header exactly (spec §2.2.x).

    Their content is not used: the gateway needs only the address.
    """
    offset = 0
    while offset < len(tlvs):
        if len(tlvs) - offset < 3:
            raise ProxyHeaderInvalid("version 2 TLV is cut short")
        (value_length,) = struct.unpack_from("!H", tlvs, offset + 1)
        offset += 3 + value_length
        if offset > len(tlvs):
            raise ProxyHeaderInvalid("version 2 TLV is longer than the header")
