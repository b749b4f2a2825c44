"""No client-controlled value can forge a log line (issue 17, item 8): CR/LF, NEL, the
Unicode line separators, tabs and bidi overrides arrive escaped, one value per line.
Real TLS on loopback, the real app, a real log capture."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway._log_safety import LOG_VALUE_LIMIT, log_safe

LINE_BREAKS = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _one_line_each(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        formatted = logging.Formatter("%(levelname)s %(name)s %(message)s").format(record)
        assert formatted.splitlines() == [formatted], formatted


async def test_cr_lf_in_a_path_forges_no_line(
    start_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """CR/LF never match a route (aiohttp's patterns stop at a line break): a 404 page, and
    no log line that could carry them."""
    gw = await start_gateway()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as client:
        for raw in ("/a%0d%0aINFO%20gateway%20forged%20line%5c", "/a%0aforged", "/x%0d"):
            async with client.get(gw.url + raw, allow_redirects=False) as r:
                await r.read()
                assert r.status in (400, 404), raw
    _one_line_each(caplog)


@pytest.mark.parametrize(
    "raw",
    ["/a%09tab%5c", "/x%c2%85nel%5cb", "/x%e2%80%a8ls%5cb", "/x%e2%80%aertl%5cb", "/x%0b%5c"],
)
async def test_rejected_paths_are_logged_escaped(
    raw: str, start_gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await start_gateway()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    caplog.set_level(logging.INFO)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as client,
        client.get(gw.url + raw, allow_redirects=False) as r,
    ):
        await r.read()
        assert r.status == 400
    lines = [rec for rec in caplog.records if "PathRejected" in rec.getMessage()]
    assert len(lines) == 1, [rec.getMessage() for rec in caplog.records]
    message = lines[0].getMessage()
    _one_line_each(caplog)
    assert not any(brk in message for brk in (*LINE_BREAKS, "\t", "\u202e")), message
    assert "\\" in message  # escaped, not dropped: the line still says what came


def test_log_safe_examples() -> None:
    assert log_safe("/konto/zertifikat") == "/konto/zertifikat"
    assert log_safe("a\r\nb") == "a\\r\\nb"
    assert log_safe("a\\r") == "a\\\\r"  # a literal backslash-r is not mistaken for CR
    assert log_safe("\x85\u2028\u202e\x00") == "\\x85\\u2028\\u202e\\x00"
    assert log_safe("café Zürich") == "café Zürich"  # printable text stays readable
    assert log_safe("x" * 1000).startswith("x" * LOG_VALUE_LIMIT + "…(1000 chars)")


@given(st.text())
def test_log_safe_is_one_line_and_unambiguous(value: str) -> None:
    safe = log_safe(value, limit=10_000)
    assert safe.splitlines() == ([safe] if safe else [])
    assert all(c.isprintable() or c == " " for c in safe)
    # unambiguous: different values never give the same text
    assert log_safe(value + "\\n", limit=10_000) != log_safe(value + "\n", limit=10_000)
