"""The PROXY header parser (gateway/tls/_proxy_header.py): examples from the spec and properties.

The headers are built by tests/gateway_proxy/_proxy_client.py (a second reading of the
spec); the properties hold for any addresses, ports, TLVs, trailing client bytes and any
split of the bytes into reads.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gateway.tls._proxy_header import (
    V1_MAX_LENGTH,
    V2_MAX_LENGTH,
    NeedMore,
    ProxyHeader,
    ProxyHeaderInvalid,
    parse_proxy_header,
)
from tests.gateway_proxy._proxy_client import V2_SIGNATURE, v1_header, v2_header, v2_local

CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32))


def parse_complete(data: bytes) -> ProxyHeader:
    result = parse_proxy_header(data)
    assert isinstance(result, ProxyHeader), result
    return result


# --- examples


def test_v1_tcp4_and_tcp6() -> None:
    line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
    header = parse_complete(line + CLIENT_HELLO)
    assert header == ProxyHeader(
        version=1,
        length=len(line),
        source=("192.0.2.1", 56324),
        destination=("198.51.100.2", 443),
    )
    line = b"PROXY TCP6 2001:DB8::1 2001:db8::2 0 65535\r\n"
    header = parse_complete(line)
    assert header.source == ("2001:db8::1", 0) and header.destination == ("2001:db8::2", 65535)


def test_v1_unknown_ignores_the_rest_of_the_line() -> None:
    for line in (b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"):
        assert parse_complete(line + b"x") == ProxyHeader(version=1, length=len(line))


def test_v1_longest_line_is_107_bytes() -> None:
    """Spec §2.1's worst case: UNKNOWN with two full IPv6 addresses and ports."""
    widest = ":".join(["ffff"] * 8)
    line = f"PROXY UNKNOWN {widest} {widest} 65535 65535\r\n".encode()
    assert len(line) == V1_MAX_LENGTH
    assert parse_complete(line).length == V1_MAX_LENGTH
    assert parse_proxy_header(line[:-1]) == NeedMore(1)
    with pytest.raises(ProxyHeaderInvalid, match="107"):
        parse_proxy_header(line.replace(b"65535 65535", b"65535 655351"))


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 192.0.2.1 198.51.100.2 056324 443\r\n",  # leading zero
        b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1_0 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1\r\n",
        b"PROXY TCP4 192.0.2.1  198.51.100.2 1 2\r\n",  # two spaces
        b"PROXY TCP4 192.0.2.01 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
        b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
        b"PROXY TCP6 fe80::1%eth0 2001:db8::2 1 2\r\n",
        b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY tcp4 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2 \r\n",
        b"PROXY \r\n",
        b"PROXY\r\n",
        b"proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 " + b"9" * 96,  # 107 bytes, no CRLF
    ],
)
def test_v1_invalid(line: bytes) -> None:
    with pytest.raises(ProxyHeaderInvalid):
        parse_proxy_header(line)


def test_v2_ipv4_ipv6_local() -> None:
    header = v2_header("192.0.2.1", 56324, "198.51.100.2", 443)
    assert parse_complete(header + CLIENT_HELLO) == ProxyHeader(
        version=2,
        length=len(header),
        source=("192.0.2.1", 56324),
        destination=("198.51.100.2", 443),
    )
    header = v2_header("2001:db8::1", 1, "2001:db8::2", 2)
    assert parse_complete(header).source == ("2001:db8::1", 1)
    assert parse_complete(v2_local()) == ProxyHeader(version=2, length=16)
    # LOCAL with an address block: the block is ignored (spec: use the real endpoints)
    local = v2_header("192.0.2.1", 1, command=0x0)
    assert parse_complete(local) == ProxyHeader(version=2, length=len(local))


def _v2(version_command: int, family_protocol: int, block: bytes) -> bytes:
    return (
        V2_SIGNATURE
        + bytes([version_command, family_protocol])
        + struct.pack("!H", len(block))
        + block
    )


@pytest.mark.parametrize(
    "family_protocol",
    [0x00, 0x01, 0x10, 0x12, 0x30, 0x31],  # UNSPEC, INET with UNSPEC/DGRAM, UNIX
)
def test_v2_proxy_without_a_tcp_address_keeps_the_peer(family_protocol: int) -> None:
    block = bytes({0: 0, 1: 12, 2: 36, 3: 216}[family_protocol >> 4])
    header = _v2(0x21, family_protocol, block)
    assert parse_complete(header) == ProxyHeader(version=2, length=len(header))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (_v2(0x11, 0x11, bytes(12)), "version other than 2"),
        (_v2(0x22, 0x11, bytes(12)), "neither LOCAL nor PROXY"),
        (_v2(0x21, 0x41, bytes(12)), "family or protocol"),
        (_v2(0x21, 0x13, bytes(12)), "family or protocol"),
        (_v2(0x21, 0x11, bytes(11)), "shorter than its address block"),
        (_v2(0x21, 0x21, bytes(35)), "shorter than its address block"),
        (_v2(0x21, 0x11, bytes(12) + b"\x04\x00"), "TLV is cut short"),
        (_v2(0x21, 0x11, bytes(12) + b"\x04\x00\x05abc"), "longer than the header"),
        (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX_LENGTH - 15), "at most"),
        (b"\r\n\r\n\x00\r\nQUIX", "does not start with a PROXY header"),
        (b"\r\nGET", "does not start with a PROXY header"),
        (CLIENT_HELLO, "TLS ClientHello"),
        (b"GET / HTTP/1.1\r\n", "does not start with a PROXY header"),
    ],
)
def test_v2_and_other_invalid(data: bytes, problem: str) -> None:
    with pytest.raises(ProxyHeaderInvalid, match=problem):
        parse_proxy_header(data)


def test_v2_largest_allowed_header() -> None:
    tlv_room = V2_MAX_LENGTH - 16 - 12 - 3
    header = v2_header("192.0.2.1", 1, tlvs=b"\x04" + struct.pack("!H", tlv_room) + bytes(tlv_room))
    assert len(header) == V2_MAX_LENGTH
    assert parse_complete(header).length == V2_MAX_LENGTH


def test_the_message_never_contains_the_bytes() -> None:
    with pytest.raises(ProxyHeaderInvalid) as info:
        parse_proxy_header(b"PROXY TCP4 secret-token 1.2.3.4 1 2\r\n")
    assert "secret" not in str(info.value)


# --- properties

ports = st.integers(min_value=0, max_value=65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
tlvs = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4).map(
    lambda items: b"".join(bytes([t]) + struct.pack("!H", len(v)) + v for t, v in items)
)


@st.composite
def headers(draw: st.DrawFn) -> tuple[bytes, tuple[str, int]]:
    """A valid header (v1 or v2, IPv4 or IPv6) and the source it names."""
    source = draw(st.one_of(ipv4, ipv6))
    family = ipv4 if ":" not in source else ipv6
    dest, sport, dport = draw(family), draw(ports), draw(ports)
    if draw(st.booleans()):
        data = v1_header(source, sport, dest, dport)
    else:
        data = v2_header(source, sport, dest, dport, tlvs=draw(tlvs))
    return data, (str(ipaddress.ip_address(source)), sport)


@given(headers(), st.binary(max_size=200))
def test_a_valid_header_is_parsed_exactly(
    header_and_source: tuple[bytes, tuple[str, int]], trailing: bytes
) -> None:
    """Whatever the client sends after it, the header's length and source are exact."""
    data, source = header_and_source
    header = parse_complete(data + trailing)
    assert header.length == len(data)
    assert header.source == source


@given(headers(), st.data())
def test_every_proper_prefix_needs_more_and_says_how_much_at_most(
    header_and_source: tuple[bytes, tuple[str, int]], data: st.DataObject
) -> None:
    full, _ = header_and_source
    cut = data.draw(st.integers(min_value=0, max_value=len(full) - 1))
    result = parse_proxy_header(full[:cut])
    assert isinstance(result, NeedMore)
    assert 0 < len(full) - cut <= result.at_most


@given(headers(), st.binary(max_size=64), st.lists(st.integers(1, 40), min_size=1))
def test_reading_in_any_pieces_gives_the_same_header(
    header_and_source: tuple[bytes, tuple[str, int]], trailing: bytes, sizes: list[int]
) -> None:
    """What the listener does: consume pieces while NeedMore, stop at the header."""
    full, _ = header_and_source
    stream, seen, offset = full + trailing, b"", 0
    for size in sizes * len(stream):  # bounded: at least one byte per round
        piece = stream[offset : offset + min(size, V1_MAX_LENGTH)]
        result = parse_proxy_header(seen + piece)
        if isinstance(result, ProxyHeader):
            assert result == parse_complete(stream)
            assert stream[result.length :] == trailing
            return
        assert len(seen + piece) < len(full)  # only header bytes were consumed
        seen += piece
        offset += len(piece)
    raise AssertionError("no header")


@given(st.binary(max_size=300))
@example(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
@example(V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes(12))
def test_any_bytes_give_a_header_more_or_invalid_never_anything_else(data: bytes) -> None:
    try:
        result = parse_proxy_header(data)
    except ProxyHeaderInvalid as exc:
        assert str(exc).startswith("invalid PROXY protocol header: ")
        return
    if isinstance(result, ProxyHeader):
        assert 0 < result.length <= len(data)
        assert result.length <= max(V1_MAX_LENGTH, V2_MAX_LENGTH)
    else:
        assert result.at_most > 0
        assert len(data) + result.at_most <= max(V1_MAX_LENGTH, V2_MAX_LENGTH)


@given(st.binary(min_size=1, max_size=40))
def test_v2_signature_with_any_tail_never_crashes(tail: bytes) -> None:
    try:
        parse_proxy_header(V2_SIGNATURE + tail)
    except ProxyHeaderInvalid:
        pass
