"""Headless Chromium driven by Selenium, with its own HOME (NSS database) and profile.

Every WebDriver call blocks; the gateway runs on the test's event loop, so the tests call
the driver through :meth:`Chrome.run` (a worker thread) and never block the loop.

The browser test modules share their marks (:data:`BROWSER_TEST_MARKS`) and the few steps
every flow starts with (:func:`password_login`, :func:`upstream_json`); the ``chromes`` and
``screenshots`` fixtures are in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography.x509.oid import NameOID
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.virtual_authenticator import VirtualAuthenticatorOptions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy.orm import Session, sessionmaker

from ca import load_trust_material
from tests.logins.web.test_password_pages import PASSWORD
from tests.polling import async_wait_for

T = TypeVar("T")
CHROMIUM = "/usr/lib/chromium/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
COMMAND_TIMEOUT = 30  # seconds for any single browser command
BROWSER_TEST_MARKS = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(240),
    # SQLite only: the store is covered on both backends elsewhere; the browser is the point.
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
]


def nss_db(home: Path, server_ca: Path) -> Path:
    """``$HOME/.pki/nssdb`` with the server CA trusted (what Chromium on Linux reads)."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True, timeout=30
    )
    subprocess.run(
        [
            "certutil",
            "-A",
            "-d",
            f"sql:{db}",
            "-n",
            "server CA",
            "-t",
            "C,,",
            "-a",
            "-i",
            str(server_ca),
        ],
        check=True,
        timeout=30,
    )
    return db


def import_p12(db: Path, p12: Path, password: str) -> None:
    """pk12util import with the mailed password (given through a file, not argv)."""
    pwfile = p12.with_suffix(".pw")
    pwfile.write_text(password)
    pwfile.chmod(0o600)
    try:
        result = subprocess.run(
            ["pk12util", "-i", str(p12), "-d", f"sql:{db}", "-w", str(pwfile), "-K", ""],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        pwfile.unlink()
    assert result.returncode == 0, result.stdout + result.stderr


def list_user_certs(db: Path) -> str:
    return subprocess.run(
        ["certutil", "-L", "-d", f"sql:{db}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


@dataclass
class Chrome:
    driver: webdriver.Chrome
    home: Path
    downloads: Path
    base: str
    _closed: bool = field(default=False)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args), COMMAND_TIMEOUT + 5)

    async def open(self, path: str) -> str:
        await self.run(self.driver.get, self.base + path)
        return await self.source()

    async def source(self) -> str:
        return await self.run(lambda: self.driver.page_source)

    async def visible_text(self) -> str:
        """What the broker reads: the rendered text of the page (no markup, no hidden parts)."""
        return await self.run(lambda: self.driver.find_element(By.TAG_NAME, "body").text)

    async def fill(self, field_id: str, value: str) -> None:
        def do() -> None:
            element = self.driver.find_element(By.ID, field_id)
            element.clear()
            element.send_keys(value)

        await self.run(do)

    async def click(self, css: str) -> str:
        """Click and wait until the next page has loaded (the old document went stale)."""

        def do() -> None:
            old = self.driver.find_element(By.TAG_NAME, "html")
            self.driver.find_element(By.CSS_SELECTOR, css).click()

            def gone(_driver: Any) -> bool:
                # Chromium reports a replaced document either as a stale element or, in a race,
                # as "Node ... does not belong to the document": both mean the page changed.
                try:
                    old.is_enabled()
                except WebDriverException:  # StaleElementReferenceException is a subclass
                    return True
                return False

            WebDriverWait(self.driver, COMMAND_TIMEOUT).until(gone)
            WebDriverWait(self.driver, COMMAND_TIMEOUT).until(
                lambda d: d.execute_script("return document.readyState") == "complete"
            )

        await self.run(do)
        return await self.source()

    async def click_download(self, css: str) -> None:
        """Click a button whose answer is a file: the page itself stays."""
        await self.run(lambda: self.driver.find_element(By.CSS_SELECTOR, css).click())

    async def scroll_to(self, element_id: str) -> None:
        """Bring an element to the top of the window (for the screenshot of a long page)."""
        await self.run(
            self.driver.execute_script,
            "document.getElementById(arguments[0]).scrollIntoView()",
            element_id,
        )

    async def url(self) -> str:
        return await self.run(lambda: self.driver.current_url)

    async def screenshot(self, path: Path) -> None:
        await self.run(self.driver.save_screenshot, str(path))

    async def wait_for_download(self, suffix: str, seconds: float = 20) -> Path:
        files = await async_wait_for(
            lambda: [p for p in self.downloads.iterdir() if p.name.endswith(suffix)],
            timeout=seconds,
            interval=0.1,
            message=f"no {suffix} download in {self.downloads}",
        )
        return files[0]

    def add_passkey_authenticator(self) -> None:
        """A virtual platform authenticator (CDP WebAuthn domain) with resident keys and UV."""
        self.driver.add_virtual_authenticator(
            VirtualAuthenticatorOptions(
                protocol="ctap2",
                transport="internal",
                has_resident_key=True,
                has_user_verification=True,
                is_user_verified=True,
            )
        )

    async def wait_for_url(self, path: str, seconds: float = 20) -> str:
        """Wait until script-driven navigation reached ``path`` (with its query, if given)."""
        try:
            await async_wait_for(
                self.url,
                until=lambda url: url.split("#")[0] == self.base + path,
                timeout=seconds,
                interval=0.1,
                message=f"never reached {path}",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {(await self.source())[:2000]}") from None
        await self.run(
            lambda: WebDriverWait(self.driver, COMMAND_TIMEOUT).until(
                lambda d: d.execute_script("return document.readyState") == "complete"
            )
        )
        return await self.source()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.driver.quit()


def issuing_ca_cn(sessions: sessionmaker[Session]) -> str:
    """The CN of the active issuing CA: the auto-select rule's filter (docs/broker-guide.md)."""
    with sessions() as session:
        issuing = list(load_trust_material(session).issuing_by_generation.values())
    (cn,) = issuing[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cn.value)


def start_chrome(
    *, home: Path, base: str, auto_select_issuer_cn: str | None = None, language: str = "de"
) -> Chrome:
    """A fresh headless Chromium (own HOME and profile); auto-selects our certificate if asked."""
    profile = home / "profile"
    downloads = home / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,1400",
        f"--lang={language}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    prefs: dict[str, Any] = {
        "download.default_directory": str(downloads),
        "download.prompt_for_download": False,
        "intl.accept_languages": language,
    }
    if auto_select_issuer_cn:
        prefs["profile.content_settings.exceptions.auto_select_certificate"] = {
            f"{base},*": {"setting": {"filters": [{"ISSUER": {"CN": auto_select_issuer_cn}}]}}
        }
    options.add_experimental_option("prefs", prefs)
    service = Service(CHROMEDRIVER, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(COMMAND_TIMEOUT)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    return Chrome(driver=driver, home=home, downloads=downloads, base=base)


def upstream_json(page: str) -> dict[str, Any]:
    """The echo upstream's answer (path and the headers it received) from the page source."""
    match = re.search(r"\{.*\}", page, re.S)
    assert match, page[:500]
    text = re.sub(r"<[^>]+>", "", match.group(0))
    return json.loads(text)  # type: ignore[no-any-return]


async def password_login(
    chrome: Chrome, email: str, next_path: str, password: str = PASSWORD
) -> str:
    """Type email and password into the password login page; returns the next page."""
    await chrome.open(f"/_gateway/login/password?next={next_path}")
    await chrome.fill("f-identifier", email)
    await chrome.fill("f-password", password)
    return await chrome.click("form button[type=submit]")
