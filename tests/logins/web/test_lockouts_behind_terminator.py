"""Behind a trusted TLS terminator the login lockouts count the client, not the terminator."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tests.logins.web.test_password_pages import login, set_password


async def test_behind_a_terminator_lockouts_count_the_client_not_the_terminator(
    gateway: Any, browser_for: Any, make_user: Any, sessions: sessionmaker[Session]
) -> None:
    """Behind a trusted terminator every connection comes from the terminator's address.
    The login pages counted failures per TCP peer, so one client's wrong broker numbers
    locked every broker out of the TAN and password logins. The client address is now the
    one the trusted terminator put in X-Forwarded-For (its last element)."""
    from dataclasses import replace

    from gateway.logins import LoginSettings
    from gateway.web._common import LOGINS

    gw = await gateway(trusted_proxies=("127.0.0.1",))
    gw.app[LOGINS].settings = replace(LoginSettings(), failures_per_address=3)
    set_password(sessions, make_user(email="anna@example.org", broker="60/123/4567").id)
    mallory = browser_for(gw)
    mallory.client._default_headers["X-Forwarded-For"] = "203.0.113.66"  # type: ignore[attr-defined]
    await mallory.get("/_gateway/login/broker")
    for _ in range(4):
        status, body, _ = await mallory.post(
            "/_gateway/login/broker", {"broker": "99/999/9999", "email": "x@example.org"}
        )
    assert status == 401 and "Zu viele" in body, body  # mallory is locked out

    anna = browser_for(gw)
    # A client-sent copy comes first; the terminator appends what it saw.
    anna.client._default_headers["X-Forwarded-For"] = "203.0.113.66, 198.51.100.7"  # type: ignore[attr-defined]
    status, _, _ = await login(anna, "anna@example.org")
    assert status == 303  # anna, at another address, is not
