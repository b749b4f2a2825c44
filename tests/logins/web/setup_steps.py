"""The 2FA set-up's steps through the pages (issue 14), for tests that need a factor enrolled:
step 1 with the code from the real SMTP sink, then the authenticator app."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pyotp

SETUP_CODE = re.compile(r"(?:Ihr Code|Your code|Uw code): (\d{6})")
TOTP_KEY = re.compile(r'id="totp-key" class="key">([A-Z2-7 ]+)<')


async def mailed_setup_code(mailbox: Any) -> str:
    """The code of the last set-up mail that arrived at the SMTP sink."""
    match = SETUP_CODE.search(await mailbox.last_text())
    assert match, "the last mail holds no set-up code"
    return match.group(1)


async def pass_step_one(b: Any, mailbox: Any, *, next_path: str = "/") -> str:
    """Send the code, read it from the mail, enter it; returns step 2's page."""
    status, body = await b.get(f"/_gateway/2fa/setup?next={quote(next_path)}")
    assert status == 200 and 'value="send"' in body, body[:400]
    await b.post("/_gateway/2fa/setup", {"action": "send", "next": next_path})
    code = await mailed_setup_code(mailbox)
    status, body, _ = await b.post(
        "/_gateway/2fa/setup", {"action": "confirm", "code": code, "next": next_path}
    )
    assert status == 200 and 'id="passkey-register"' in body, body[:400]
    return body


async def enrol_totp(b: Any, mailbox: Any, clock: Any, *, next_path: str = "/") -> str:
    """Steps 1 and 2 with the authenticator app; returns the TOTP secret."""
    await pass_step_one(b, mailbox, next_path=next_path)
    status, body = await b.get(f"/_gateway/account/totp?next={quote(next_path)}")
    match = TOTP_KEY.search(body)
    assert status == 200 and match, body[:400]
    secret = match.group(1).replace(" ", "")
    status, body, _ = await b.post(
        "/_gateway/account/totp", {"code": pyotp.TOTP(secret).at(clock()), "next": next_path}
    )
    assert status == 200 and body.count("<li><code>") == 10, body[:400]
    return secret
