"""A client that does what HAProxy's ``send-proxy-v2`` does: PROXY header, then TLS.

The headers are built here from the spec (haproxy.org proxy-protocol.txt), independently
of gateway/tls/_proxy_header.py, so that the parser is tested against a second reading.

:func:`proxied_request` runs TLS over memory BIOs so that it controls every byte on the
wire: by default the header and the ClientHello go out in one segment (as HAProxy sends
them when the client's data is already there), which is the case where a server that
reads too much would eat the start of the handshake.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
TIMEOUT = 10.0  # seconds: every wait of the client is bounded


def v1_header(source: str, source_port: int, dest: str = "", dest_port: int = 443) -> bytes:
    """``PROXY TCP4|TCP6 src dst sport dport\\r\\n``."""
    family = "TCP6" if ":" in source else "TCP4"
    dest = dest or ("::1" if family == "TCP6" else "127.0.0.1")
    return f"PROXY {family} {source} {dest} {source_port} {dest_port}\r\n".encode()


def v2_header(
    source: str,
    source_port: int,
    dest: str = "",
    dest_port: int = 443,
    *,
    command: int = 0x1,
    tlvs: bytes = b"",
) -> bytes:
    """A version 2 header for a TCP connection (command 0x1 PROXY, 0x0 LOCAL)."""
    address = ipaddress.ip_address(source)
    family = 0x1 if address.version == 4 else 0x2
    dest_address = ipaddress.ip_address(dest or ("127.0.0.1" if family == 0x1 else "::1"))
    block = address.packed + dest_address.packed + struct.pack("!HH", source_port, dest_port)
    block += tlvs
    return (
        V2_SIGNATURE
        + bytes([0x20 | command, family << 4 | 0x1])
        + struct.pack("!H", len(block))
        + block
    )


def v2_local() -> bytes:
    """What HAProxy sends on a health check: LOCAL, family UNSPEC, no addresses."""
    return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


class ClosedBeforeTLS(ConnectionError):
    """The server closed the connection without sending a single TLS byte."""


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def echoed(self) -> dict[str, list[str]]:
        """The echo upstream's view of the request headers: lower-cased name → values."""
        result: dict[str, list[str]] = {}
        for name, value in json.loads(self.body)["headers"]:
            result.setdefault(name.lower(), []).append(value)
        return result


async def proxied_request(
    port: int,
    prefix: bytes | Sequence[bytes],
    *,
    context: ssl.SSLContext,
    target: str = "/echo",
    headers: Sequence[tuple[str, str]] = (),
    source: str = "127.0.0.1",
    coalesce: bool = True,
    pause: float = 0.0,
) -> Response:
    """Connect from ``source``, send ``prefix`` (one or more pieces, ``pause`` seconds
    apart), do TLS, send one ``GET target`` with Connection: close, read the answer.

    Raises:
        ClosedBeforeTLS: the server closed (or reset) the connection before any TLS byte.
    """
    pieces = [prefix] if isinstance(prefix, bytes) else list(prefix)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), TIMEOUT
    )
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outgoing.read()
        if coalesce and pieces:
            pieces[-1] += hello
        else:
            pieces.append(hello)
        received = 0
        try:
            for index, piece in enumerate(pieces):
                if index and pause:
                    await asyncio.sleep(pause)
                writer.write(piece)
                await writer.drain()
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    writer.write(outgoing.read())
                    data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
                    if not data:
                        raise ConnectionResetError("closed during the handshake") from None
                    received += len(data)
                    incoming.write(data)
        except (ConnectionResetError, BrokenPipeError) as exc:
            if received == 0:
                raise ClosedBeforeTLS(f"closed before TLS: {exc}") from None
            raise
        writer.write(outgoing.read())
        lines = [f"GET {target} HTTP/1.1", "Host: localhost", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers]
        tls.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        writer.write(outgoing.read())
        await writer.drain()
        raw = b""
        while True:
            data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
            if data:
                incoming.write(data)
            else:
                incoming.write_eof()
            try:
                while chunk := tls.read(65536):
                    raw += chunk
                break  # b"": the server's close_notify
            except ssl.SSLWantReadError:
                if not data:
                    break  # the connection ended without close_notify
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
    finally:
        writer.close()
    return _parse(raw)


def _parse(raw: bytes) -> Response:
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [(k, v) for k, _, v in (line.partition(": ") for line in header_lines)]
    if any(k.lower() == "transfer-encoding" and "chunked" in v for k, v in headers):
        body, data = b"", rest
        while data:
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body, data = body + data[:size], data[size + 2 :]
        rest = body
    return Response(status=int(status_line.split()[1]), headers=headers, body=rest)
