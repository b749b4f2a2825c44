"""The renewal banner inside the portal's own pages (issue 15, ``portal_renewal_banner``),
through the service's real streaming proxy over TLS: inserted after ``<body>`` where the
page can take it, in the page's charset, never cached; untouched everywhere else."""

from __future__ import annotations

import html
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.proxy._html_insert import MAX_HTML, can_insert, insert_after_body
from tests.conftest import FakeClock
from tests.logins.web.test_account_pages import download
from tests.logins.web.test_renewal_in_the_portal import certificate_browser

NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}
BANNER = '<div id="brokergate-renewal-banner"'


async def _fetch(browser: Any, path: str, **headers: str) -> tuple[int, Any, bytes]:
    async with browser.client.get(browser.gateway.url + path, headers=headers) as response:
        return response.status, response.headers, await response.read()


async def _broker_in_window(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    tmp_path: Path,
    **settings: Any,
) -> tuple[Any, Any, int]:
    """A broker 20 days before expiry, logged in by certificate, the interstitial seen."""
    gw, pem, uid, not_after = await certificate_browser(
        gateway, browser_for, make_user, sessions, tmp_path, real_proxy=True, **settings
    )
    clock.advance(not_after - clock() - timedelta(days=20, hours=2))
    broker = browser_for(gw, cert=pem)
    status, body = await broker.get("/portal/utf8", headers=NAVIGATE)
    assert status == 200 and "Ihr Zertifikat läuft bald ab" in body  # the interstitial
    return gw, broker, uid


async def test_banner_on_portal_pages_inside_the_window(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    _, broker, _ = await _broker_in_window(
        gateway, browser_for, make_user, sessions, clock, tmp_path, portal_renewal_banner=True
    )
    status, headers, raw = await _fetch(broker, "/portal/utf8", **NAVIGATE)
    assert status == 200
    page = raw.decode("utf-8")
    assert page.index(BANNER) == page.index('<body class="portal">') + len('<body class="portal">')
    text = html.unescape(page)
    assert "Ihr Zertifikat läuft am" in text and "noch 20 Tage" in text
    assert 'href="/_gateway/account#certificate"' in page
    assert 'href="/_gateway/static/portal-banner.css"' in page
    assert "Grüße aus dem Portal" in text  # the portal's own text unchanged
    assert "<p id=ae>identity</p>" in page  # the portal was asked not to compress
    assert int(headers["Content-Length"]) == len(raw)
    assert "ETag" not in headers and headers["Cache-Control"] == "no-store"

    # An ISO-8859-1 page: the banner in character references, the page's bytes kept.
    status, headers, raw = await _fetch(broker, "/portal/latin1", **NAVIGATE)
    assert status == 200 and BANNER.encode() in raw
    assert "Grüße".encode("latin-1") in raw and raw.isascii() is False
    assert "Ihr Zertifikat läuft am" in html.unescape(raw.decode("latin-1"))

    # Not a page load, no Content-Length, English: as the portal sent it, or in English.
    fetch = {"Sec-Fetch-Mode": "cors", "Accept": "text/html"}  # a script loading HTML
    _, headers, raw = await _fetch(broker, "/portal/utf8", **fetch)
    assert BANNER.encode() not in raw and headers["ETag"] == '"portal-1"'
    _, _, raw = await _fetch(broker, "/portal/chunked", **NAVIGATE)
    assert BANNER.encode() not in raw and b"Portal" in raw
    _, _, raw = await _fetch(broker, "/portal/utf8", **NAVIGATE, **{"Accept-Language": "en"})
    assert "Your certificate expires on" in html.unescape(raw.decode())

    # The stylesheet is there for the portal's page, and restyles only the banner.
    status, headers, raw = await _fetch(broker, "/_gateway/static/portal-banner.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    rules = [line for line in raw.decode().splitlines() if "{" in line]
    assert rules and all(line.startswith("#brokergate-renewal-banner") for line in rules)


async def test_import_steps_in_the_portal_after_a_download(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    _, broker, _ = await _broker_in_window(
        gateway, browser_for, make_user, sessions, clock, tmp_path, portal_renewal_banner=True
    )
    assert (await download(broker))[0] == 200
    _, _, raw = await _fetch(broker, "/portal/utf8", **NAVIGATE)
    text = html.unescape(raw.decode())
    assert "Bitte binden Sie Ihr neues Zertifikat ein" in text
    assert "Ihr Zertifikat läuft am" not in text


async def test_no_banner_by_default_or_outside_the_window(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    _, broker, _ = await _broker_in_window(
        gateway, browser_for, make_user, sessions, clock, tmp_path
    )
    _, headers, raw = await _fetch(broker, "/portal/utf8", **NAVIGATE)
    assert BANNER.encode() not in raw and headers["ETag"] == '"portal-1"'
    assert b"<p id=ae>identity</p>" not in raw  # compression left to the portal


@pytest.mark.parametrize(
    ("status", "headers", "length", "expected"),
    [
        (200, {"Content-Type": "text/html; charset=utf-8"}, 10, True),
        (200, {"Content-Type": "TEXT/HTML"}, 10, True),
        (200, {"Content-Type": 'text/html; charset="windows-1252"'}, 10, True),
        (200, {"Content-Type": "text/html; charset=utf-16"}, 10, False),
        (200, {"Content-Type": "application/json"}, 10, False),
        (200, {"Content-Type": "text/html", "Content-Encoding": "gzip"}, 10, False),
        (200, {"Content-Type": "text/html"}, None, False),
        (200, {"Content-Type": "text/html"}, MAX_HTML + 1, False),
        (404, {"Content-Type": "text/html"}, 10, False),
    ],
)
def test_which_answers_can_take_the_banner(
    status: int, headers: dict[str, str], length: int | None, expected: bool
) -> None:
    assert can_insert(status, headers, length) is expected


def test_insert_after_the_first_body_tag() -> None:
    assert insert_after_body(b"<html><BODY onload=x>a</BODY>", "<i>ü</i>") == (
        b"<html><BODY onload=x><i>&#252;</i>a</BODY>"
    )
    assert insert_after_body(b"<body>a<body>b", "X") == b"<body>Xa<body>b"
    assert insert_after_body(b"<bodyguard>no body tag</bodyguard>", "X") is None
    assert insert_after_body(b"<frameset></frameset>", "X") is None
