"""Properties of the forwarded-header rewrite (gateway/proxy/_header_rewrite.py).

For any mix of client headers, in any case and with ``_`` spelled for ``-``:

- no client-sent identity header (``X-Brokergate-…``) reaches the upstream; exactly the
  gateway's own identity headers do;
- no hop-by-hop header, and no header the Connection header names, is forwarded (either way);
- X-Forwarded-For is the client's chain plus the peer only when the peer is a trusted
  proxy, and the peer alone otherwise; -Proto and Forwarded likewise;
- every other header arrives unchanged, in order, and the input is not modified.

The hop-by-hop list below is this test's own reading of RFC 9110 §7.6.1 and RFC 2616
§13.5.1, not the module's constant, so a name dropped from the module's list fails here.
"""

from __future__ import annotations

import ipaddress
import string

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.proxy._header_rewrite import downstream_response_headers, upstream_request_headers

HOP_BY_HOP = {
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
}
IDENTITY_NAMES = [
    "X-Brokergate-User-Id",
    "X-Brokergate-Email",
    "X-Brokergate-Level",
    "X-Brokergate-Method",
    "X-Brokergate-Broker-Number",
    "X-Brokergate-Assertion",
    "X-Brokergate-Anything-New",
]
FORWARDING = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"}
# Request headers the rewrite owns (replaced, filtered or dropped): never "neutral".
OWNED = HOP_BY_HOP | FORWARDING | {"host", "expect", "cookie"}
TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
PROPERTY_SETTINGS = settings(max_examples=80, deadline=None)  # about 0.3 s each, unloaded


def normalised(name: str) -> str:
    return name.lower().replace("_", "-")


def is_identity(name: str) -> bool:
    return normalised(name).startswith("x-brokergate-")


def _respell(name: str, upper: int, underscore: int) -> str:
    chars = []
    for index, char in enumerate(name):
        if char == "-" and underscore >> index & 1:
            chars.append("_")
        else:
            chars.append(char.upper() if upper >> index & 1 else char.lower())
    return "".join(chars)


def spelling(name: str) -> st.SearchStrategy[str]:
    """``name`` in random case, with any of its hyphens written as underscores."""
    bits = st.integers(min_value=0, max_value=2 ** len(name) - 1)
    return st.tuples(bits, bits).map(lambda b: _respell(name, b[0], b[1]))


def case_only(name: str) -> st.SearchStrategy[str]:
    bits = st.integers(min_value=0, max_value=2 ** len(name) - 1)
    return bits.map(lambda upper: _respell(name, upper, 0))


values = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=0, max_size=20
)
tokens = st.text(alphabet=TCHAR, min_size=1, max_size=12)
addresses = st.one_of(
    st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: str(ipaddress.ip_address(a)))
)


@st.composite
def client_headers(
    draw: st.DrawFn,
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], set[str]]:
    """(all headers in order, the neutral ones in order, the names Connection lists)."""
    connection_named = draw(st.sets(tokens.map(str.lower), max_size=3))
    connection_named = {n for n in connection_named if normalised(n) not in OWNED}
    neutral_names = tokens.filter(
        lambda n: (
            normalised(n) not in OWNED
            and not is_identity(n)
            and normalised(n) not in {normalised(c) for c in connection_named}
        )
    )
    pools = {
        "neutral": st.tuples(neutral_names, values),
        "identity": st.tuples(st.sampled_from(IDENTITY_NAMES).flatmap(spelling), values),
        "hop": st.tuples(
            st.sampled_from(sorted(HOP_BY_HOP - {"connection"})).flatmap(spelling), values
        ),
        "named": st.tuples(
            st.sampled_from(sorted(connection_named)).flatmap(spelling)
            if connection_named
            else neutral_names,
            values,
        ),
    }
    kinds = draw(st.lists(st.sampled_from(sorted(pools)), max_size=14))
    headers: list[tuple[str, str]] = []
    neutral: list[tuple[str, str]] = []
    for kind in kinds:
        header = draw(pools[kind])
        if kind == "named" and not connection_named:
            kind = "neutral"
        headers.append(header)
        if kind == "neutral":
            neutral.append(header)
    if connection_named or draw(st.booleans()):
        listed = ", ".join(sorted(connection_named) or ["close"])
        at = draw(st.integers(min_value=0, max_value=len(headers)))
        headers.insert(at, (draw(case_only("Connection")), listed))
    return headers, neutral, connection_named


@st.composite
def gateway_identity(draw: st.DrawFn) -> dict[str, str]:
    names = draw(st.sets(st.sampled_from(IDENTITY_NAMES[:-1]), max_size=5))
    return {name: draw(values) for name in sorted(names)}


@PROPERTY_SETTINGS
@given(client=client_headers(), identity=gateway_identity(), trusted=st.booleans())
def test_only_the_gateways_identity_headers_reach_the_upstream(
    client: tuple[list[tuple[str, str]], list[tuple[str, str]], set[str]],
    identity: dict[str, str],
    trusted: bool,
) -> None:
    headers, _neutral, _named = client
    out = upstream_request_headers(
        CIMultiDict(headers),
        identity_headers=identity,
        peer="127.0.0.1",
        peer_trusted=trusted,  # a trusted proxy cannot vouch for identity either
        scheme="https",
        host="portal.example",
    )
    sent = [(name.lower(), value) for name, value in out.items() if is_identity(name)]
    assert sorted(sent) == sorted((name.lower(), value) for name, value in identity.items())


@PROPERTY_SETTINGS
@given(client=client_headers(), trusted=st.booleans())
def test_hop_by_hop_and_connection_named_headers_are_dropped_the_rest_kept_in_order(
    client: tuple[list[tuple[str, str]], list[tuple[str, str]], set[str]], trusted: bool
) -> None:
    headers, neutral, named = client
    incoming = CIMultiDict(headers)
    before = list(incoming.items())
    out = upstream_request_headers(
        incoming,
        identity_headers={},
        peer="127.0.0.1",
        peer_trusted=trusted,
        scheme="https",
        host="portal.example",
    )
    assert list(incoming.items()) == before  # the input is not modified
    dropped = HOP_BY_HOP | {"expect"} | {normalised(n) for n in named}
    assert not [name for name in out if normalised(name) in dropped]
    kept = [
        (name, value)
        for name, value in out.items()
        if normalised(name) not in OWNED and not is_identity(name)
    ]
    assert kept == neutral


@st.composite
def forwarding_headers(draw: st.DrawFn) -> list[tuple[str, str]]:
    """X-Forwarded-* and Forwarded as a client or a proxy may send them, in any spelling."""
    headers: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        name = draw(
            st.sampled_from(
                ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"]
            )
        )
        underscored = draw(st.booleans()) and "-" in name
        spelled = draw(spelling(name) if underscored else case_only(name))
        if name == "X-Forwarded-For":
            value = ", ".join(draw(st.lists(addresses, min_size=1, max_size=3)))
        elif name == "X-Forwarded-Proto":
            value = draw(st.sampled_from(["http", "https", "gopher"]))
        elif name == "X-Forwarded-Host":
            value = draw(st.sampled_from(["evil.example", "portal.example", "10.0.0.1"]))
        else:
            value = f"for={draw(addresses)}"
        headers.append((spelled, value))
    return headers


@PROPERTY_SETTINGS
@given(
    forwarded=forwarding_headers(),
    peer=st.one_of(st.none(), addresses),
    trusted=st.booleans(),
    scheme=st.sampled_from(["http", "https"]),
)
def test_x_forwarded_for_is_appended_only_for_a_trusted_peer(
    forwarded: list[tuple[str, str]], peer: str | None, trusted: bool, scheme: str
) -> None:
    out = upstream_request_headers(
        CIMultiDict([("Accept", "*/*"), *forwarded]),
        identity_headers={},
        peer=peer,
        peer_trusted=trusted,
        scheme=scheme,
        host="portal.example",
    )
    # Only exact spellings (any case, no "_") count, and only from a trusted proxy.
    exact = (
        [(name.lower(), value) for name, value in forwarded if "_" not in name] if trusted else []
    )
    chain = [value for name, value in exact if name == "x-forwarded-for"]
    chain += [peer] if peer else []
    assert out.getall("X-Forwarded-For", []) == ([", ".join(chain)] if chain else [])
    protos = [value for name, value in exact if name == "x-forwarded-proto"]
    assert out.getall("X-Forwarded-Proto") == [protos[0] if protos else scheme]
    hosts = [value for name, value in exact if name == "x-forwarded-host"]
    assert out.getall("X-Forwarded-Host") == [hosts[0] if hosts else "portal.example"]
    assert out.getall("Forwarded", []) == [v for name, v in exact if name == "forwarded"]
    # No misspelt copy of a forwarding header goes through under any name.
    assert not [name for name in out if "_" in name and normalised(name) in FORWARDING]


@st.composite
def upstream_answer_headers(draw: st.DrawFn) -> list[tuple[str, str]]:
    """An answer's headers: hop-by-hop ones, others, and a Connection header naming some."""
    others = draw(
        st.lists(
            st.tuples(tokens.filter(lambda n: normalised(n) not in HOP_BY_HOP), values),
            max_size=8,
        )
    )
    hops = draw(
        st.lists(
            st.tuples(st.sampled_from(sorted(HOP_BY_HOP)).flatmap(case_only), values), max_size=3
        )
    )
    named = (
        draw(st.sets(st.sampled_from([name for name, _ in others]), max_size=3))
        if others
        else set()
    )
    headers = draw(st.permutations(others + hops))
    if named:
        listed = ", ".join(draw(spelling(name)) for name in sorted(named))
        headers.insert(draw(st.integers(0, len(headers))), ("Connection", listed))
    return headers


@PROPERTY_SETTINGS
@given(headers=upstream_answer_headers())
def test_the_answer_loses_its_hop_by_hop_headers_and_keeps_the_rest_in_order(
    headers: list[tuple[str, str]],
) -> None:
    out = downstream_response_headers(CIMultiDict(headers))
    listed = {
        normalised(token.strip())
        for name, value in headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    expected = [
        (name, value)
        for name, value in headers
        if normalised(name) not in HOP_BY_HOP and normalised(name) not in listed
    ]
    assert list(out.items()) == expected
