"""Path spellings some portals fold (issue 17, item 2): trailing dots and spaces per segment
(IIS, Windows file names), Unicode compatibility forms (NFKC: fullwidth letters, ligatures,
the Kelvin sign). The gateway refuses them with 400 (docs/gateway.md "Path normalisation"),
so no spelling of a protected prefix is forwarded at a lower level. Examples, properties
against the route table, and the quoted requests over real TLS."""

from __future__ import annotations

import unicodedata
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import PathRejected, RouteRule, required_for
from gateway._paths import normalise_path
from store import Level
from tests.gateway.conftest import ServerTLS
from tests.gateway.helpers import client_context, raw_request

RULES = (
    RouteRule(prefix="/konto/zertifikat", level=Level.STRONG),
    RouteRule(prefix="/konto", level=Level.BASIC),
    RouteRule(prefix="/public", level=Level.ANONYMOUS),
)
FULLWIDTH = "\uff4b\uff4f\uff4e\uff54\uff4f"  # "konto" in fullwidth letters
FULLWIDTH_KONTO = quote(FULLWIDTH)
QUOTED = ["/konto./zertifikat/x", "/konto%20/zertifikat/x", f"/{FULLWIDTH_KONTO}/zertifikat/x"]


@pytest.mark.parametrize(
    "raw",
    [
        *QUOTED,
        "/konto/zertifikat./x",
        "/konto/zertifikat%2e/x",
        "/konto.../zertifikat",
        "/konto.%20./zertifikat",
        "/konto%20%20/zertifikat",
        "/konto/zertifikat.",  # last segment too
        "/konto/zertifikat%20",
        "/konto.;x/zertifikat",  # Tomcat's reading ends the segment in a dot
        "/konto;x%20/zertifikat",
        "/..%20/konto/zertifikat",  # ".. " is ".." to IIS
        "/%EF%BD%8B%EF%BD%8F%EF%BD%8E%EF%BD%94%EF%BD%8F/zertifikat",  # fullwidth, encoded
        f"/{FULLWIDTH}/zertifikat",  # fullwidth, raw (as some clients send it)
        "/konto/zertifi%E2%84%AAat",  # KELVIN SIGN: NFKC gives "K"
        "/konto/%EF%AC%81le",  # LATIN SMALL LIGATURE FI
        "/konto/u%CC%88ber",  # decomposed ü: NFKC composes it
        "/konto%C2%A0/zertifikat",  # NO-BREAK SPACE: NFKC gives a space
        "/konto%C2%85/zertifikat",  # NEL, a C1 control
        "/konto%E2%80%AE/zertifikat",  # RIGHT-TO-LEFT OVERRIDE
    ],
)
def test_folded_spellings_are_refused(raw: str) -> None:
    with pytest.raises(PathRejected):
        normalise_path(raw)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("/konto/zertifikat.pdf", "/konto/zertifikat.pdf"),
        ("/a%20b/c", "/a b/c"),  # a space inside a segment is no trailing space
        ("/%C3%BCber", "/über"),  # NFC text is NFKC-stable
        ("/.well-known/x", "/.well-known/x"),
        ("/a/./b/../c", "/a/c"),  # dot segments are resolved, not refused
        ("/v1.2/x", "/v1.2/x"),
        ("/caf%C3%A9", "/café"),
    ],
)
def test_ordinary_spellings_pass(raw: str, path: str) -> None:
    assert normalise_path(raw).path == path


def test_route_prefixes_must_be_stable_too() -> None:
    for prefix in ("/konto.", "/konto ", f"/{FULLWIDTH}"):
        with pytest.raises(ValueError, match="route prefix"):
            RouteRule(prefix=prefix, level=Level.STRONG)


# --- property: every spelling of /konto/zertifikat/… a portal could fold to it is refused
# or needs at least what /konto/zertifikat needs

_FULLWIDTH = {
    c: chr(ord(c) + 0xFEE0) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
}
_COMPAT = {"k": ["\u212a", "\uff4b"], "K": ["\u212a"], "i": ["\u2170", "\uff49"], "f": ["\uff46"]}


@st.composite
def _spelt_char(draw: st.DrawFn, char: str) -> str:
    choice = draw(st.sampled_from(["same", "upper", "lower", "encode", "encode-lower", "compat"]))
    if choice == "upper":
        return char.upper()
    if choice == "lower":
        return char.lower()
    if choice in ("encode", "encode-lower"):
        encoded = quote(char, safe="") if not char.isalnum() else f"%{ord(char):02X}"
        return encoded.lower() if choice == "encode-lower" else encoded
    if choice == "compat":
        options = [_FULLWIDTH.get(char, char), *_COMPAT.get(char, [])]
        folded = draw(st.sampled_from(options))
        return draw(st.sampled_from([folded, quote(folded, safe="")]))
    return char


@st.composite
def _spelt_segment(draw: st.DrawFn, segment: str) -> str:
    out = "".join(draw(_spelt_char(c)) for c in segment)
    tail = draw(st.lists(st.sampled_from([".", "%2e", "%2E", "%20", " ", "%09"]), max_size=3))
    params = draw(st.sampled_from(["", ";x", ";jsessionid=1", ";"]))
    return out + "".join(tail) + params


@st.composite
def protected_spellings(draw: st.DrawFn) -> str:
    parts: list[str] = []
    for segment in ("konto", "zertifikat", draw(st.sampled_from(["x", "neu", "a.pdf"]))):
        detour = draw(st.sampled_from(["", "/", "/.", "/public/..", "/public/..;", "/x/%2e%2e"]))
        parts.append(detour + "/" + draw(_spelt_segment(segment)))
    return "".join(parts)


@settings(max_examples=1500, deadline=None)
@given(protected_spellings(), st.sampled_from(["GET", "POST", "HEAD"]))
def test_no_spelling_of_a_protected_prefix_is_forwarded_lower(raw: str, method: str) -> None:
    try:
        result = normalise_path(raw)
    except PathRejected:
        return
    level = required_for(result.path, method, RULES, Level.ANONYMOUS).level
    assert level is Level.STRONG, (raw, result.path, level)
    # and what is forwarded is what was matched
    assert normalise_path(result.forward).path == result.path


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=20))
def test_whatever_passes_is_nfkc_stable_and_without_trailing_dot_or_space(text: str) -> None:
    try:
        result = normalise_path("/" + quote(text, safe="/;"))
    except PathRejected:
        return
    for segment in result.path.split("/"):
        assert unicodedata.normalize("NFKC", segment) == segment
        for part in (segment, segment.split(";", 1)[0]):
            assert not part.endswith((".", " ")) or part in (".", "..")


# --- the quoted requests over real TLS: a 400 page, nothing forwarded


@pytest.mark.parametrize("target", QUOTED)
async def test_quoted_spellings_get_the_bad_path_page(
    start_gateway: Any, server_tls: ServerTLS, target: str
) -> None:
    gw = await start_gateway(default_level=Level.ANONYMOUS, routes=RULES)
    response = await raw_request(gw.url, target, context=client_context(server_tls.ca))
    assert response.status == 400, (target, response.status)
    assert "Ungültige Adresse" in response.body


async def test_the_canonical_path_still_needs_strong(
    start_gateway: Any, server_tls: ServerTLS
) -> None:
    gw = await start_gateway(default_level=Level.ANONYMOUS, routes=RULES)
    context = client_context(server_tls.ca)
    assert (await raw_request(gw.url, "/konto/zertifikat/x", context=context)).status == 401
    assert (await raw_request(gw.url, "/public/x", context=context)).status == 200
