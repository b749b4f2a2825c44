"""The lockout over real TLS (issue 17, item 7): a stranger failing five times locks only
their own address; the global back-off spares the broker's certificate. Addresses come from
X-Forwarded-For, the gateway trusting the loopback peer as its terminator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import LoginSettings
from tests.conftest import password_mail_for
from tests.logins.web.test_account_pages import write_pem
from tests.logins.web.test_password_pages import PASSWORD, set_password

STRANGER, BROKER = "198.51.100.66", "203.0.113.10"


async def _login(b: Any, address: str, password: str) -> tuple[int, str]:
    await b.get("/_gateway/login/password")
    form = {"identifier": "anna@example.org", "password": password, "csrf": b.csrf()}
    headers = {"X-Forwarded-For": address}
    async with b.client.post(
        b.gateway.url + "/_gateway/login/password",
        data=form,
        headers=headers,
        allow_redirects=False,
    ) as r:
        return r.status, await r.text()


async def test_a_stranger_cannot_lock_the_broker_out(
    gateway: Any, browser_for: Any, make_user: Any, sessions: sessionmaker[Session]
) -> None:
    gw = await gateway(trusted_proxies=("127.0.0.1",))
    set_password(sessions, make_user(email="anna@example.org").id)
    stranger, broker = browser_for(gw, language="en"), browser_for(gw, language="en")
    for _ in range(5):
        await _login(stranger, STRANGER, "guess")
    status, body = await _login(stranger, STRANGER, PASSWORD)
    assert status == 401 and "Too many failed attempts" in body  # that address: locked
    status, _ = await _login(broker, BROKER, PASSWORD)
    assert status == 303  # the broker, elsewhere: logged in


async def test_the_global_back_off_spares_the_certificate(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    authority: Any,
    tmp_path: Path,
    login_settings: LoginSettings,
) -> None:
    gw = await gateway(trusted_proxies=("127.0.0.1",))
    uid = make_user(email="anna@example.org").id
    set_password(sessions, uid)
    spray = browser_for(gw, language="en")
    for n in range(login_settings.failures_per_account_global):
        await _login(spray, f"198.51.100.{n // 4}", "guess")
    plain = browser_for(gw, language="en")
    status, body = await _login(plain, BROKER, PASSWORD)
    assert status == 401 and "Too many failed attempts" in body  # the global back-off
    issued = authority.issue_certificate(uid, "test:lockout")
    pem = write_pem(issued.pkcs12, password_mail_for(sessions, issued.serial), tmp_path, "a")
    with_cert = browser_for(gw, cert=pem, language="en")
    assert (await with_cert.get("/vertrag"))[0] == 200  # certificate SSO: never throttled
    status, _ = await _login(with_cert, BROKER, PASSWORD)
    assert status == 303  # and a password login with her certificate is not held up
