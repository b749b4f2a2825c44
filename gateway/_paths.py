"""Request-path normalisation: one canonical spelling that the policy matches and the upstream gets.

The rules (docs/gateway.md "Path normalisation"), in order:

1. The path must start with ``/``; ``#``, backslashes (raw or ``%5C``), control characters
   (raw or encoded, ``%00`` included) are rejected with 400: servers disagree about them
   (IIS and some Java containers read ``\\`` as ``/``).
2. Percent-decoding happens once. An encoded slash ``%2F`` is rejected: the upstream might
   decode it and see another path than we matched. A ``%`` followed by two hex digits
   *after* decoding (double encoding, ``%252e``) is rejected for the same reason. Bytes
   must form UTF-8.
3. Repeated slashes collapse to one; dot segments are removed (RFC 3986 §5.2.4), so
   ``%2e%2e`` counts as ``..``.
4. The result is re-encoded canonically and *that* path is forwarded, so the path the
   policy matched is the path the upstream receives.

The policy additionally matches case-insensitively and also considers the path with
``;params`` stripped from each segment (Tomcat's reading), taking the highest level of
both readings (``gateway.auth._route_policy``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from gateway._errors import PathRejected

__all__ = ["NormalisedPath", "normalise_path", "strip_segment_params"]

_HEX = "0123456789abcdefABCDEF"
_DOUBLE_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
# RFC 3986 pchar minus "%": what may stay unencoded in a forwarded path.
_SAFE = "/!$&'()*+,;=:@~-._"


@dataclass(frozen=True, kw_only=True)
class NormalisedPath:
    path: str  # decoded, canonical: what the policy matches
    forward: str  # ``path`` re-encoded, plus the untouched query: what the upstream gets
    query: str  # raw query string without "?", passed unchanged


def _percent_decode(raw: str) -> str:
    out = bytearray()
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "%":
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise PathRejected(f"broken percent-encoding at {raw[i : i + 3]!r}")
            value = int(pair, 16)
            if value == 0x2F:
                # SECURITY: an encoded slash would let "/a%2Fb" be one segment to us and two to
                # an upstream that decodes it (or the reverse).
                raise PathRejected("encoded slash (%2F) in the path")
            out.append(value)
            i += 3
            continue
        out.extend(char.encode("utf-8", "surrogateescape"))
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise PathRejected("the path is not UTF-8 after percent-decoding") from None


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path (segment form, same result)."""
    output: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
            continue
        if segment == "..":
            if output:
                output.pop()
            if last:
                output.append("")
            continue
        output.append(segment)
    return "/" + "/".join(output)


# A path that is already canonical: no "%", no empty, "." or ".." segments, only characters
# that stay unencoded. Most requests look like this; they skip the decoding work (a property
# test checks that both ways give the same result).
_PLAIN = re.compile(r"/|(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-._~!$&'()*+,;=:@]+)+/?")


def normalise_path(raw_target: str) -> NormalisedPath:
    """Canonicalise a request target (``request.raw_path``: path and query, as sent).

    Raises:
        PathRejected: the spelling is ambiguous (see the module docstring); the broker
            gets a 400 page.
    """
    raw_path, _, query = raw_target.partition("?")
    if _PLAIN.fullmatch(raw_path):
        # An empty query ("/a?") is forwarded without its "?", as the full normalisation does.
        forward = f"{raw_path}?{query}" if query else raw_path
        return NormalisedPath(path=raw_path, forward=forward, query=query)
    return _normalise(raw_path, query)


def _normalise(raw_path: str, query: str) -> NormalisedPath:
    if not raw_path.startswith("/"):
        raise PathRejected("the request target is not an absolute path")
    if "#" in raw_path:
        raise PathRejected("a fragment (#) in the request target")
    decoded = _percent_decode(raw_path)
    if "\\" in decoded:
        raise PathRejected("backslash in the path")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise PathRejected("control character (e.g. %00) in the path")
    if _DOUBLE_ENCODED.search(decoded):
        raise PathRejected("double percent-encoding in the path")
    collapsed = re.sub("/{2,}", "/", decoded)
    canonical = _remove_dot_segments(collapsed)
    forward = quote(canonical, safe=_SAFE)
    if query:
        forward = f"{forward}?{query}"
    return NormalisedPath(path=canonical, forward=forward, query=query)


def strip_segment_params(path: str) -> str:
    """``/a;x/..;y/b`` → dot segments resolved after dropping ``;params`` (Tomcat's reading)."""
    stripped = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    return _remove_dot_segments(re.sub("/{2,}", "/", stripped or "/"))
