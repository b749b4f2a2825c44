"""Path normalisation: examples, rejections, and properties (hypothesis)."""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import PathRejected, RouteRule, required_for
from gateway._paths import normalise_path
from store import Level

RULES = (
    RouteRule(prefix="/antrag", level=Level.STRONG),
    RouteRule(prefix="/rechner", level=Level.RESTRICTED),
    RouteRule(prefix="/public", level=Level.ANONYMOUS),
)


@pytest.mark.parametrize(
    ("raw", "path", "forward"),
    [
        ("/", "/", "/"),
        ("/a//b", "/a/b", "/a/b"),
        ("//antrag", "/antrag", "/antrag"),
        ("/./antrag", "/antrag", "/antrag"),
        ("/public/../antrag", "/antrag", "/antrag"),
        ("/public/%2e%2e/antrag", "/antrag", "/antrag"),
        ("/public/%2E%2E/antrag", "/antrag", "/antrag"),
        ("/%61ntrag", "/antrag", "/antrag"),
        ("/a/b/..", "/a/", "/a/"),
        ("/..", "/", "/"),
        ("/x?y=%2F&z=1", "/x", "/x?y=%2F&z=1"),
        ("/caf%C3%A9", "/café", "/caf%C3%A9"),
        ("/a%20b", "/a b", "/a%20b"),
    ],
)
def test_normalises(raw: str, path: str, forward: str) -> None:
    result = normalise_path(raw)
    assert result.path == path
    assert result.forward == forward


@pytest.mark.parametrize(
    "raw",
    [
        "/antrag%2Fx",
        "/public%2f..%2fantrag",
        "/a%5Cb",
        "/a\\b",
        "/a%00b",
        "/a%0ab",
        "/a%252e%252e/b",
        "/a%zz",
        "/a%2",
        "/a%C3",
        "antrag",
        "http://evil/antrag",
        "/a#b",
    ],
)
def test_rejects_ambiguous_spellings(raw: str) -> None:
    with pytest.raises(PathRejected):
        normalise_path(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "/antrag",
        "/ANTRAG",
        "/Antrag/x",
        "//antrag",
        "/./antrag",
        "/public/../antrag",
        "/public/%2e%2e/antrag",
        "/public/..;/antrag",
        "/public;x/..;y/antrag",
        "/%41NTRAG",
        "/rechner/../antrag/neu",
        "/antrag;jsessionid=1",
    ],
)
def test_spellings_of_a_protected_path_need_its_level(raw: str) -> None:
    path = normalise_path(raw).path
    assert required_for(path, "GET", RULES, Level.BASIC).level is Level.STRONG


def test_negative_public_stays_public() -> None:
    assert (
        required_for(normalise_path("/public/x").path, "GET", RULES, Level.BASIC).level
        is Level.ANONYMOUS
    )


segment = st.text(alphabet=string.ascii_letters + string.digits + "-_.~;=%", min_size=0, max_size=8)
raw_paths = st.lists(
    st.one_of(
        segment,
        st.sampled_from(["..", ".", "%2e%2e", "%2E.", "", "antrag", "ANTRAG", "public", "..;"]),
    ),
    min_size=0,
    max_size=8,
).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=400, deadline=None)
@given(raw_paths)
def test_normalisation_is_idempotent_and_canonical(raw: str) -> None:
    try:
        first = normalise_path(raw)
    except PathRejected:
        return
    second = normalise_path(first.forward)
    assert second.path == first.path
    assert second.forward == first.forward
    assert "//" not in first.path
    assert "/./" not in first.path + "/" and "/../" not in first.path + "/"
    assert first.path.startswith("/")


@settings(max_examples=400, deadline=None)
@given(raw_paths, st.sampled_from(["GET", "POST", "HEAD", "get"]))
def test_no_spelling_lowers_the_level(raw: str, method: str) -> None:
    """Whatever a client sends, the upstream gets exactly the path whose level was checked,
    and re-encoding or case changes never lower it."""
    try:
        result = normalise_path(raw)
    except PathRejected:
        return
    level = required_for(result.path, method, RULES, Level.BASIC).level
    for variant in (result.path.upper(), result.path.lower(), quote(result.path, safe="/")):
        try:
            other = normalise_path(variant).path
        except PathRejected:
            continue
        other_level = required_for(other, method, RULES, Level.BASIC).level
        if other.lower() == result.path.lower():
            assert other_level is level
    # the forwarded path is the matched path
    assert normalise_path(result.forward).path == result.path


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=30))
def test_arbitrary_text_is_normalised_or_rejected(text: str) -> None:
    try:
        result = normalise_path("/" + text)
    except PathRejected:
        return
    assert result.path.startswith("/")
    assert all(ord(c) >= 0x20 and c != "\\" for c in result.path)


@settings(max_examples=500, deadline=None)
@given(st.one_of(raw_paths, st.text(max_size=30).map(lambda t: "/" + t)))
def test_fast_path_agrees_with_full_normalisation(raw: str) -> None:
    from gateway._paths import _normalise

    raw_path, _, query = raw.partition("?")
    try:
        slow = _normalise(raw_path, query)
    except PathRejected:
        with pytest.raises(PathRejected):
            normalise_path(raw)
        return
    assert normalise_path(raw) == slow
