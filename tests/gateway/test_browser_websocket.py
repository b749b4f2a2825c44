"""A WebSocket in real headless Chromium is closed by the gateway when the certificate that
opened it is revoked (docs/gateway.md "WebSockets"; gateway.proxy._websocket_guard).

The upstream serves a page whose script opens a WebSocket through the gateway and writes
what happens (open, messages, close code and reason) into the DOM; the test reads the DOM
in a bounded poll loop. Chromium logs in by certificate single sign-on (auto-select rule,
no prompt); the certificate is revoked through the CA, as ops would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.gateway.conftest import Brokers, ServerTLS
from tests.gateway.helpers import UpstreamCloses, websocket_upstream
from tests.logins.web.chrome import (
    BROWSER_TEST_MARKS,
    Chrome,
    import_p12,
    issuing_ca_cn,
    nss_db,
    start_chrome,
)

pytestmark = BROWSER_TEST_MARKS

# The portal page: a live feed over a WebSocket to the same origin (through the gateway).
LIVE_PAGE = """<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>Live</title></head>
<body>
<h1>Live-Daten</h1>
<p>Status: <span id="state">verbinde</span></p>
<p>Schließcode: <span id="close-code"></span> Grund: <span id="close-reason"></span></p>
<ol id="messages"></ol>
<script>
const show = (id, text) => { document.getElementById(id).textContent = text; };
const ws = new WebSocket(`wss://${location.host}/ws`);
ws.onopen = () => { show("state", "offen"); ws.send("hallo aus dem Browser"); };
ws.onmessage = (event) => {
  const item = document.createElement("li");
  item.textContent = event.data;
  document.getElementById("messages").append(item);
};
ws.onclose = (event) => {
  show("state", "geschlossen");
  show("close-code", String(event.code));
  show("close-reason", event.reason);
};
</script>
</body></html>
"""
CLOSE_BOUND = 6.0  # seconds: revocation is promised within 5 s on every replica, plus polling


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """Overrides the gateway tests' echo upstream: the WebSocket echo, plus the live page."""
    closes: UpstreamCloses = asyncio.Queue()
    async with websocket_upstream(closes, pages={"/live": LIVE_PAGE}) as url:
        yield url


async def dom(chrome: Chrome) -> dict[str, Any]:
    """What the page's script wrote so far."""
    return await chrome.run(  # type: ignore[no-any-return]
        chrome.driver.execute_script,
        """return {
          state: document.getElementById("state").textContent,
          code: document.getElementById("close-code").textContent,
          reason: document.getElementById("close-reason").textContent,
          messages: [...document.querySelectorAll("#messages li")].map((li) => li.textContent),
        };""",
    )


async def poll_dom(chrome: Chrome, done: Any, *, within: float) -> tuple[dict[str, Any], float]:
    """Read the DOM every 0.05 s until ``done(dom)``, at most ``within`` seconds."""
    started = time.monotonic()
    seen = await dom(chrome)
    while not done(seen) and time.monotonic() - started < within:
        await asyncio.sleep(0.05)
        seen = await dom(chrome)
    return seen, time.monotonic() - started


async def test_revoking_the_certificate_closes_the_pages_websocket_with_1008(
    brokers: Brokers,
    start_gateway: Any,
    server_tls: ServerTLS,
    sessions: sessionmaker[Session],
    chromes: list[Chrome],
    screenshots: Path,
    tmp_path: Path,
) -> None:
    # The production refresh interval (2 s), so the bound measured is the real one.
    gw = await start_gateway(revocation_refresh_interval=dt.timedelta(seconds=2))
    cert = brokers.issue(brokers.user(email="live@example.org"))
    # The broker's browser holds the certificate and selects it for us without a prompt.
    db = nss_db(tmp_path / "home", server_tls.ca)
    import_p12(db, cert.p12_path, cert.password)
    browser = start_chrome(
        home=tmp_path / "home", base=gw.url, auto_select_issuer_cn=issuing_ca_cn(sessions)
    )
    chromes.append(browser)

    await browser.open("/live")
    seen, _ = await poll_dom(browser, lambda d: len(d["messages"]) >= 2, within=10)
    assert seen["state"] == "offen", seen
    # the upstream learnt the certificate login; the browser's message came back
    assert seen["messages"] == ['{"level": "strong"}', "echo:hallo aus dem Browser"], seen
    await browser.screenshot(screenshots / "websocket-1-open.png")
    # Left alone, it stays open across several guard checks (one every 0.5 s).
    seen, _ = await poll_dom(browser, lambda d: d["code"] != "", within=1.2)
    assert seen["state"] == "offen" and seen["code"] == "", seen

    brokers.revoke(cert.serial)  # through the CA: the store changes, the gateway's cache lags
    seen, seconds = await poll_dom(browser, lambda d: d["code"] != "", within=CLOSE_BOUND)
    assert seen["code"] == "1008", seen  # policy violation
    assert seen["reason"] == "certificate revoked" and seen["state"] == "geschlossen", seen
    assert seconds < CLOSE_BOUND
    await browser.screenshot(screenshots / "websocket-2-closed.png")

    # Reloading the page (same browser, same certificate) gets the gateway's clear page.
    await browser.open("/live")
    text = await browser.visible_text()
    assert "Ihr Zertifikat wurde gesperrt" in text and "Live-Daten" not in text
    await browser.screenshot(screenshots / "websocket-3-reload.png")
