"""Properties of the upstream pool's answer parsing (gateway/proxy/_http1_pool.py).

Any valid HTTP/1.1 answer (status, reason, headers with obs-text, an optional 103 before
it; a body framed by Content-Length, chunked with extensions and trailers, or the end of
the connection), split into reads at any byte boundaries, comes out of the pool with the
same status, reason, headers in order and body; a keep-alive connection is reusable after
it, a close-delimited one never. A malformed answer (cut short, a bad chunk size, a bad or
doubled Content-Length, a broken header line, a bad status line, a second answer) is
refused: the pool raises UpstreamProtocolError and never returns a body it did not get
whole, nor reuses the connection.

Most examples go through the connection's sans-I/O entry point (``_Connection`` is the
asyncio protocol the pool's sockets drive: ``data_received`` and ``connection_lost``
called directly, so every split is exactly the one generated); a few go over a real
loopback socket through ``UpstreamPool.request`` to show the same holds on the wire.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import string
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from gateway.proxy._http1_pool import UpstreamPool, UpstreamProtocolError, _Connection

TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
# Headers that change the framing or the connection's fate: generated on purpose only.
FRAMING = {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}
STATUSES = [200, 201, 202, 203, 206, 301, 302, 303, 307, 400, 401, 403, 404, 409, 500, 503]
# Bounded so the file takes a few seconds: each example is a fresh event loop and pool.
SANS_IO = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MALFORMED_EXAMPLES = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
ON_LOOPBACK = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Answer:
    """One generated answer: its bytes and what the pool must make of them."""

    wire: bytes
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    framing: str  # "length", "chunked" or "close"

    @property
    def delimited_by_close(self) -> bool:
        return self.framing == "close"


names = st.text(alphabet=TCHAR, min_size=1, max_size=16).filter(lambda n: n.lower() not in FRAMING)
# A field value: visible ASCII and obs-text (RFC 9110 §5.5), inner spaces and tabs.
value_bytes = st.lists(
    st.one_of(st.integers(0x21, 0x7E), st.integers(0x80, 0xFF), st.sampled_from([0x20, 0x09])),
    max_size=24,
).map(lambda codes: bytes(codes).strip(b" \t"))
reasons = st.text(alphabet=string.ascii_letters + string.digits + " -", max_size=20).map(str.strip)


def _decoded(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")  # as the pool decodes


@st.composite
def chunked(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` in chunks of generated sizes, hex in any case, optional extensions and
    trailers (RFC 9112 §7.1)."""
    out = []
    rest = body
    while rest:
        size = draw(st.integers(1, max(1, len(rest))))
        piece, rest = rest[:size], rest[size:]
        digits = format(size, "x")
        digits = digits.upper() if draw(st.booleans()) else digits
        extension = b";ext=1" if draw(st.booleans()) else b""
        out.append(digits.encode() + extension + b"\r\n" + piece + b"\r\n")
    trailers = b"X-Checksum: 1\r\n" if draw(st.booleans()) else b""
    out.append(b"0\r\n" + trailers + b"\r\n")
    return b"".join(out)


@st.composite
def answers(
    draw: st.DrawFn, *, framings: tuple[str, ...] = ("length", "chunked", "close")
) -> Answer:
    status = draw(st.sampled_from(STATUSES))
    reason = draw(reasons)
    raw_headers = draw(st.lists(st.tuples(names, value_bytes), max_size=8))
    body = draw(st.binary(max_size=1500))
    framing = draw(st.sampled_from(framings))
    framing_header = {
        "length": [("Content-Length", str(len(body)))],
        "chunked": [("Transfer-Encoding", "chunked")],
        "close": [],
    }[framing]
    at = draw(st.integers(0, len(raw_headers)))
    fields = [(n, v) for n, v in raw_headers[:at]]
    fields += [(n, v.encode()) for n, v in framing_header]
    fields += [(n, v) for n, v in raw_headers[at:]]
    head = b"HTTP/1.1 %d %b\r\n" % (status, reason.encode())
    head += b"".join(n.encode() + b": " + v + b"\r\n" for n, v in fields) + b"\r\n"
    encoded = draw(chunked(body)) if framing == "chunked" else body
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    wire = (interim if draw(st.booleans()) else b"") + head + encoded
    return Answer(
        wire=wire,
        status=status,
        reason=reason,
        headers=[(n, _decoded(v)) for n, v in fields],
        body=body,
        framing=framing,
    )


def split(data: bytes, cuts: set[int]) -> list[bytes]:
    points = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


class _Transport:
    """What the connection calls on its transport; records how it ended."""

    def __init__(self) -> None:
        self.closed = False

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@dataclass
class Outcome:
    status: int | None = None
    reason: str | None = None
    headers: list[tuple[str, str]] | None = None
    body: bytes | None = None
    refused: BaseException | None = None
    reusable: bool = False


async def _feed(pieces: list[bytes], *, then_close: bool) -> Outcome:
    pool = UpstreamPool(
        URL("http://127.0.0.1:9"), size=1, connect_timeout=1, read_timeout=2, idle_timeout=1
    )
    connection = _Connection(pool)
    connection.connection_made(_Transport())  # type: ignore[arg-type]
    head = connection.start(head_only=False)
    connection.request_sent = True
    for piece in pieces:
        connection.data_received(piece)
    if then_close:
        connection.connection_lost(None)
    outcome = Outcome()
    try:
        response = await asyncio.wait_for(head, 3)
        outcome.status, outcome.reason = response.status, response.reason
        outcome.headers = list(response.headers.items())
        outcome.body = await asyncio.wait_for(response.read(), 3)
    except UpstreamProtocolError as exc:
        outcome.refused = exc
    outcome.reusable = connection.reusable()
    return outcome


def feed(pieces: list[bytes], *, then_close: bool) -> Outcome:
    return asyncio.run(_feed(pieces, then_close=then_close))


def assert_round_trip(answer: Answer, outcome: Outcome) -> None:
    assert outcome.refused is None, outcome.refused
    assert (outcome.status, outcome.reason) == (answer.status, answer.reason)
    assert outcome.headers == answer.headers
    assert outcome.body == answer.body


def assert_refused(outcome: Outcome) -> None:
    assert isinstance(outcome.refused, UpstreamProtocolError), outcome
    assert outcome.body is None  # never a body it did not get whole
    assert not outcome.reusable


# --- valid answers


@SANS_IO
@given(answer=answers(), cuts=st.sets(st.integers(1, 4000), max_size=12))
def test_any_valid_answer_split_anywhere_round_trips(answer: Answer, cuts: set[int]) -> None:
    # A close-delimited body ends with the connection; the others must not need it.
    outcome = feed(split(answer.wire, cuts), then_close=answer.delimited_by_close)
    assert_round_trip(answer, outcome)
    assert outcome.reusable is not answer.delimited_by_close


# --- malformed answers


@MALFORMED_EXAMPLES
@given(
    answer=answers(framings=("length", "chunked")),
    cut=st.floats(0, 1, exclude_max=True),
    cuts=st.sets(st.integers(1, 4000), max_size=6),
)
def test_an_answer_cut_short_is_refused(answer: Answer, cut: float, cuts: set[int]) -> None:
    truncated = answer.wire[: int(len(answer.wire) * cut)]
    assert_refused(feed(split(truncated, cuts), then_close=True))


def _bad_chunk_size(answer: Answer) -> bytes:
    head, _, _ = answer.wire.rpartition(b"0\r\n")
    return head + b"zz\r\nxx\r\n0\r\n\r\n"


MALFORMED = {
    # (name, which framings it applies to, how the answer's bytes are broken)
    "chunk size not hex": (("chunked",), _bad_chunk_size),
    "Content-Length not a number": (
        ("length",),
        lambda a: a.wire.replace(b"Content-Length: ", b"Content-Length: 1x", 1),
    ),
    "two different Content-Lengths": (
        ("length",),
        lambda a: a.wire.replace(b"Content-Length: ", b"Content-Length: 7\r\nContent-Length: ", 1),
    ),
    "Content-Length with chunked": (
        ("chunked",),
        lambda a: a.wire.replace(
            b"Transfer-Encoding: chunked", b"Content-Length: 3\r\nTransfer-Encoding: chunked", 1
        ),
    ),
    "header line without a colon": (
        ("length", "chunked"),
        lambda a: (
            a.wire.replace(b"\r\n\r\n", b"\r\nno colon here\r\n\r\n", 1)
            if b"103 Early" not in a.wire
            else a.wire.replace(b"Hints\r\n", b"Hints\r\nno colon here\r\n", 1)
        ),
    ),
    "space before the colon": (
        ("length",),
        lambda a: a.wire.replace(b"Content-Length: ", b"Content-Length : ", 1),
    ),
    "status not a number": (
        ("length", "chunked", "close"),
        lambda a: a.wire.replace(b"HTTP/1.1 %d " % a.status, b"HTTP/1.1 2x0 ", 1),
    ),
    "CR inside a header value": (
        ("length", "chunked"),
        lambda a: (
            a.wire.replace(b"\r\n\r\n", b"\r\nX-Bad: a\rb\r\n\r\n", 1)
            if b"103 Early" not in a.wire
            else a.wire.replace(b"Hints\r\n", b"Hints\r\nX-Bad: a\rb\r\n", 1)
        ),
    ),
}


@MALFORMED_EXAMPLES
@given(
    data=st.data(),
    kind=st.sampled_from(sorted(MALFORMED)),
    cuts=st.sets(st.integers(1, 4000), max_size=6),
)
def test_a_malformed_answer_is_refused(data: st.DataObject, kind: str, cuts: set[int]) -> None:
    framings, breaks = MALFORMED[kind]
    answer = data.draw(answers(framings=framings))
    broken = breaks(answer)
    assert broken != answer.wire, kind
    assert_refused(feed(split(broken, cuts), then_close=answer.delimited_by_close))


@MALFORMED_EXAMPLES
@given(
    first=answers(framings=("length", "chunked")),
    second=answers(framings=("length",)),
    cuts=st.sets(st.integers(1, 8000), max_size=6),
)
def test_a_second_answer_to_one_request_spoils_the_connection(
    first: Answer, second: Answer, cuts: set[int]
) -> None:
    """The first answer was complete and stands; the extra one is never taken for the
    answer to a later request: the connection is not reused."""
    outcome = feed(split(first.wire + second.wire, cuts), then_close=False)
    assert outcome.body in (first.body, None)
    assert not outcome.reusable


# --- the same over a real loopback socket


@ON_LOOPBACK
@given(answer=answers(), cuts=st.sets(st.integers(1, 4000), max_size=6))
def test_the_pool_reads_a_valid_answer_sent_in_pieces_over_loopback(
    answer: Answer, cuts: set[int]
) -> None:
    asyncio.run(_over_loopback(answer, split(answer.wire, cuts)))


async def _over_loopback(answer: Answer, pieces: list[bytes]) -> None:
    served = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await answer_in_pieces(reader, writer)
        finally:
            served.set_result(None)

    async def answer_in_pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one segment per piece
        await reader.readuntil(b"\r\n\r\n")
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)
        if answer.delimited_by_close:
            writer.close()
        else:
            await reader.read()  # the pool keeps the connection; it closes it at the end
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(
        URL(f"http://127.0.0.1:{port}"), size=1, connect_timeout=2, read_timeout=5, idle_timeout=5
    )
    try:
        response = await pool.request("GET", "/", [("Host", "portal.test")], body=None)
        try:
            body = await response.read()
        finally:
            response.release()
        assert (response.status, response.reason) == (answer.status, answer.reason)
        assert list(response.headers.items()) == answer.headers
        assert body == answer.body
        assert pool.idle_connections == (0 if answer.delimited_by_close else 1)
    finally:
        await pool.close()
        await asyncio.wait_for(served, 5)  # the server saw the pool close its connection
        server.close()
        await server.wait_closed()
