"""What the login pages log leaves out the secrets in their URLs (activation tokens)."""

from __future__ import annotations

from typing import Any


async def test_the_activation_token_stays_out_of_the_log(
    gateway: Any, browser_for: Any, caplog: Any
) -> None:
    """The activation link's token lets its holder set the account's password. A form
    posted after the pre-login session idled out (CSRF refused) logged the request path,
    token included; the error log now names the route's pattern instead."""
    import logging

    gw = await gateway()
    token = "Zq3" + "x" * 40
    b = browser_for(gw)
    caplog.set_level(logging.DEBUG)
    status, _, _ = await b.post(
        f"/_gateway/activate/{token}",
        {"password": "a new password 123", "repeat": "a new password 123", "csrf": "stale"},
        follow=False,
    )
    assert status == 403
    # (The test runner's aiohttp access log is not ours: 'gateway serve' runs without one.)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("gateway"))
    assert "CsrfRejected" in ours and "/_gateway/activate/{token}" in ours
    assert token not in ours
