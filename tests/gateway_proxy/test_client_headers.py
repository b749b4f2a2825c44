"""Client-IP, client-certificate and override headers a portal might trust never reach it
(issue 17, item 5): property-tested on the pure rewrite, and end to end through the proxy."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.proxy._header_rewrite import (
    CLIENT_ADDRESS_HEADERS,
    CLIENT_CERTIFICATE_HEADERS,
    CLIENT_CERTIFICATE_PREFIXES,
    REQUEST_OVERRIDE_HEADERS,
    upstream_request_headers,
)

LISTED = sorted(CLIENT_ADDRESS_HEADERS | CLIENT_CERTIFICATE_HEADERS | REQUEST_OVERRIDE_HEADERS)
# Names the issue quotes (they reached the portal unchanged) and common variants.
QUOTED = [
    "X-Real-IP",
    "True-Client-IP",
    "CF-Connecting-IP",
    "Fastly-Client-IP",
    "X-Client-IP",
    "X-Cluster-Client-IP",
    "X-SSL-Client-Verify",
    "X-SSL-Client-S-DN",
    "X-SSL-Client-Cert",
    "X-Client-Cert",
    "X-Client-Cert-Chain",
    "Client-Cert",
    "Client-Cert-Chain",
    "X-Forwarded-Client-Cert",
    "SSL_CLIENT_S_DN",
    "SSL_CLIENT_VERIFY",
    "SSL-Client-Cert",
    "X-ARR-ClientCert",
    "X-Amzn-Mtls-Clientcert-Leaf",
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-HTTP-Method-Override",
]


def _spellings(name: str) -> st.SearchStrategy[str]:
    """``name`` in any case, each ``-`` possibly written ``_`` (CGI/WSGI read both alike)."""
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).flatmap(
        lambda upper: st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
            lambda under: "".join(
                ("_" if u and c == "-" else c.upper() if up else c.lower())
                for c, up, u in zip(name, upper, under, strict=True)
            )
        )
    )


_names = st.one_of(
    st.sampled_from(LISTED + QUOTED).flatmap(_spellings),
    st.tuples(
        st.sampled_from(CLIENT_CERTIFICATE_PREFIXES),
        st.from_regex(r"[A-Za-z0-9-]{0,12}", fullmatch=True),
    )
    .map("".join)
    .flatmap(_spellings),
)


@settings(max_examples=400, deadline=None)
@given(name=_names, trusted=st.booleans(), value=st.text("abc=;/ 12", max_size=20))
def test_no_spelling_of_a_listed_header_survives(name: str, trusted: bool, value: str) -> None:
    headers = CIMultiDict([(name, value), ("Accept", "text/html")])
    out = upstream_request_headers(
        headers,
        identity_headers={},
        peer="203.0.113.9",
        peer_trusted=trusted,
        scheme="https",
        host="portal.example",
    )
    sent = {n.lower().replace("_", "-") for n in out}
    assert name.lower().replace("_", "-") not in sent
    assert "accept" in sent  # the negative case: an ordinary header passes


def test_ordinary_headers_pass_and_x_forwarded_extras_only_from_a_trusted_proxy() -> None:
    headers = CIMultiDict(
        [("User-Agent", "x"), ("X-Requested-With", "XMLHttpRequest"), ("X-Forwarded-Port", "443")]
    )
    kwargs: dict[str, Any] = {
        "identity_headers": {},
        "peer": "203.0.113.9",
        "scheme": "https",
        "host": "portal.example",
    }
    direct = upstream_request_headers(headers, peer_trusted=False, **kwargs)
    assert direct["User-Agent"] == "x" and direct["X-Requested-With"] == "XMLHttpRequest"
    assert "X-Forwarded-Port" not in direct
    behind = upstream_request_headers(headers, peer_trusted=True, **kwargs)
    assert behind["X-Forwarded-Port"] == "443"


async def test_quoted_headers_do_not_reach_the_portal(gateway_url: str) -> None:
    sent = {name: "203.0.113.66" for name in QUOTED if "_" not in name}
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway_url + "/echo", headers=sent) as resp:
            assert resp.status == 200
            echoed = await resp.json()
    received = {name.lower() for name, _ in echoed["headers"]}
    assert received.isdisjoint({name.lower() for name in sent}), received
    assert "x-forwarded-for" in received  # ours, from what the gateway saw


@pytest.mark.parametrize("kind", [tuple, list, set, frozenset])
def test_strip_names_and_cookies_apply_in_any_collection_and_on_every_call(kind: Any) -> None:
    """The normalised strip list and cookie names are worked out once per tuple (issue 11):
    every call and every kind of collection still drops every spelling."""
    headers = CIMultiDict(
        [
            ("x_custom_cert", "pem"),
            ("X-Custom-Cert", "pem"),
            ("Cookie", "Portal=1; Bg-Session=secret"),
            ("Accept", "text/html"),
        ]
    )
    for _ in range(2):
        out = upstream_request_headers(
            headers,
            identity_headers={"X-Brokergate-User-Id": "1"},
            peer="203.0.113.9",
            peer_trusted=False,
            scheme="https",
            host="portal.example",
            strip=kind(["X_Custom-CERT"]),
            gateway_cookies=kind(["bg-session"]),
        )
        assert "X-Custom-Cert" not in out and "x_custom_cert" not in out
        assert out["Cookie"] == "Portal=1"
        assert out["Accept"] == "text/html" and out["X-Brokergate-User-Id"] == "1"
    with pytest.raises(ValueError, match="not an identity header"):
        upstream_request_headers(
            headers,
            identity_headers={"X-Other": "1"},
            peer=None,
            peer_trusted=False,
            scheme="https",
            host=None,
        )
