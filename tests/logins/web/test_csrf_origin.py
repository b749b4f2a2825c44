"""CSRF's second line: Origin, else Referer, must be gateway.public_url's origin (OWASP's
"verifying origin with standard headers"); the token stays the first line (issue 17, item 6).
Real TLS on loopback, the real app."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gateway.auth._middleware import expected_origin

LOGOUT = "/_gateway/logout"


async def _logout(b: Any, headers: dict[str, str], *, token: str | None = None) -> int:
    await b.get("/_gateway/login/password")
    form = {"csrf": token if token is not None else b.csrf()}
    async with b.client.post(
        b.gateway.url + LOGOUT, data=form, headers=headers, allow_redirects=False
    ) as r:
        await r.read()
        return r.status


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1"},  # same host, other scheme and port
        {"Origin": "not a url"},
        {"Referer": "https://evil.example/_gateway/login/password"},
        {"Referer": "null"},
        # Origin decides when both are sent, even with a same-origin Referer
        {"Origin": "https://evil.example", "Referer": "{gw}/_gateway/login/password"},
    ],
)
async def test_cross_origin_with_a_valid_token_is_refused(
    gateway: Any, browser_for: Any, headers: dict[str, str]
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    filled = {k: v.replace("{gw}", gw.url) for k, v in headers.items()}
    assert await _logout(b, filled) == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "{gw}"},
        {"Origin": "{GW}"},  # scheme and host compare case-insensitively
        {"Referer": "{gw}/_gateway/login/password?next=/x"},
        {"Origin": "{gw}", "Referer": "https://evil.example/"},  # Origin wins
        {},  # neither: the token alone (old clients and privacy proxies strip both)
    ],
)
async def test_same_origin_or_no_header_with_a_valid_token_passes(
    gateway: Any, browser_for: Any, headers: dict[str, str]
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    filled = {
        k: v.replace("{gw}", gw.url).replace("{GW}", gw.url.upper()) for k, v in headers.items()
    }
    assert await _logout(b, filled) == 200  # the logged-out page


async def test_same_origin_without_the_token_is_still_refused(
    gateway: Any, browser_for: Any
) -> None:
    gw = await gateway()
    b = browser_for(gw)
    assert await _logout(b, {"Origin": gw.url}, token="forged") == 403


async def test_json_endpoints_check_the_origin_too(gateway: Any, browser_for: Any) -> None:
    gw = await gateway()
    b = browser_for(gw)
    _, page = await b.get("/_gateway/login/passkey")
    match = re.search(r'data-csrf="([^"]+)"', page)
    assert match
    token = match.group(1)
    url = gw.url + "/_gateway/login/passkey/options"
    for origin, expected in (("https://evil.example", 403), (gw.url, 200)):
        async with b.client.post(url, json={"csrf": token}, headers={"Origin": origin}) as r:
            assert r.status == expected, origin


@pytest.mark.parametrize(
    ("public_url", "origin"),
    [
        ("https://portal.example", "https://portal.example"),
        ("https://portal.example:443/", "https://portal.example"),
        ("https://Portal.Example:8443/base", "https://portal.example:8443"),
        ("http://portal.example:80", "http://portal.example"),
    ],
)
def test_expected_origin(public_url: str, origin: str) -> None:
    assert expected_origin(public_url) == origin
