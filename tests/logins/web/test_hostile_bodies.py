"""Hostile bodies to every form and JSON endpoint of ours: a clear 4xx and one log line,
never a 500 or a traceback (issue 17, item 1). Real TLS on loopback, the real app."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.web._routes import CORE_ROUTES, LOGIN_ROUTES
from tests.conftest import password_mail_for
from tests.logins.web.test_account_pages import write_pem

POST_PATHS = sorted(
    {
        # a token, or an id of the head users' pages (issue 13): the body is read first
        re.sub(r"\{(user_id|office_id)\}", "1", path.replace("{token}", "x" * 20))
        for method, path, _handler in (*CORE_ROUTES, *LOGIN_ROUTES)
        if method == "POST"
    }
)
JSON_PATHS = [p for p in POST_PATHS if p.endswith(("/options", "/verify", "/register"))]
FORM_PATHS = [p for p in POST_PATHS if p not in JSON_PATHS]
URLENCODED = "application/x-www-form-urlencoded"
BOUNDARY = "----brokergate17"


def multipart(fields: list[tuple[bytes, bytes]], boundary: str = BOUNDARY) -> bytes:
    out = b""
    for name, value in fields:
        out += (
            f"--{boundary}\r\n".encode()
            + b'Content-Disposition: form-data; name="'
            + name
            + b'"\r\n\r\n'
            + value
            + b"\r\n"
        )
    return out + f"--{boundary}--\r\n".encode()


MALFORMED: dict[str, tuple[str, bytes]] = {
    "urlencoded invalid UTF-8": (URLENCODED, b"csrf=x&broker=\xff\xfe"),
    "urlencoded unknown charset": (f"{URLENCODED}; charset=no-such-charset", b"csrf=x"),
    "multipart invalid UTF-8": (
        f"multipart/form-data; boundary={BOUNDARY}",
        multipart([(b"csrf", b"x"), (b"broker", b"\xff\xfe")]),
    ),
    "multipart without a field name": (
        f"multipart/form-data; boundary={BOUNDARY}",
        f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
    ),
    "multipart broken framing": (
        "multipart/form-data; boundary=zzz",
        b"--zzz\r\nnot a header line\r\n",
    ),
    "wrong content type": ("text/plain", b"csrf=x"),
    "oversized": (URLENCODED, b"csrf=" + b"a" * (1024 * 1024 + 10)),
}
MALFORMED_JSON: dict[str, tuple[str, bytes]] = {
    "invalid JSON": ("application/json", b'{"csrf": '),
    "invalid UTF-8": ("application/json", b'{"csrf": "\xff\xfe"}'),
    "50,000-deep nesting": ("application/json", b"[" * 50_000 + b"]" * 50_000),
    "deep object nesting": ("application/json", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    "not an object": ("application/json", b'["csrf"]'),
    "a form instead": (URLENCODED, b"csrf=x"),
}


async def _post(
    client: aiohttp.ClientSession, url: str, content_type: str, body: bytes
) -> tuple[int, str]:
    headers = {"Content-Type": content_type}
    data = io.BytesIO(body)  # aiohttp warns about large raw bytes bodies
    async with client.post(url, data=data, headers=headers, allow_redirects=False) as r:
        return r.status, await r.text()


@pytest.fixture
def strong_browser(
    browser_for: Any, make_user: Any, authority: Any, sessions: Any, tmp_path: Path
) -> Callable[[Any], Awaitable[Any]]:
    """A broker with a certificate: strong and fresh, so the account pages read their
    bodies too instead of sending the client to a login page first."""

    async def make(gw: Any) -> Any:
        uid = make_user(email="anna@example.org", broker="60/123/4567").id
        issued = authority.issue_certificate(uid, "test:hostile")
        password = password_mail_for(sessions, issued.serial)
        pem = write_pem(issued.pkcs12, password, tmp_path, "anna")
        b = browser_for(gw, cert=pem, language="en")
        status, _ = await b.get("/_gateway/account")
        assert status == 200
        return b

    return make


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_form_gets_a_4xx_page_and_one_log_line(
    case: str, gateway: Any, strong_browser: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway()
    b = await strong_browser(gw)
    content_type, body = MALFORMED[case]
    caplog.set_level(logging.INFO)
    for path in FORM_PATHS:
        caplog.clear()
        status, text = await _post(b.client, gw.url + path, content_type, body)
        assert 400 <= status < 500, (path, status, text[:200])
        assert status != 403, (path, "reached the CSRF check: the body was read")
        assert "<h1>" in text and "Traceback" not in text
        assert _tracebacks(caplog) == [], path
        lines = [r for r in caplog.records if r.name == "gateway" and "Body" in r.getMessage()]
        assert len(lines) == 1, (path, [r.getMessage() for r in caplog.records])


@pytest.mark.parametrize("case", sorted(MALFORMED_JSON))
async def test_malformed_json_gets_a_4xx_answer(
    case: str, gateway: Any, strong_browser: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway()
    b = await strong_browser(gw)
    content_type, body = MALFORMED_JSON[case]
    caplog.set_level(logging.INFO)
    for path in JSON_PATHS:
        caplog.clear()
        status, text = await _post(b.client, gw.url + path, content_type, body)
        assert status in (400, 415), (path, status, text[:200])
        assert _tracebacks(caplog) == [], path


async def test_a_well_formed_form_still_reaches_the_csrf_check(
    gateway: Any, browser_for: Any
) -> None:
    """The negative case: a readable form with a wrong token is a 403, not a 400."""
    gw = await gateway()
    b = browser_for(gw)
    await b.get("/_gateway/login/password")
    for content_type, body in (
        (URLENCODED, b"csrf=wrong&identifier=a"),
        (f"multipart/form-data; boundary={BOUNDARY}", multipart([(b"csrf", b"wrong")])),
    ):
        status, _ = await _post(b.client, gw.url + "/_gateway/login/password", content_type, body)
        assert status == 403


# --- fuzzing: whatever the body, never a 5xx (bounded; the app runs on this test's loop)

_bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)), max_size=4).map(
        lambda pairs: b"&".join(k + b"=" + v for k, v in pairs)
    ),
    st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)), max_size=4).map(
        multipart
    ),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=20,
    ).map(lambda value: repr(value).replace("'", '"').encode()),
)
_content_types = st.sampled_from(
    [
        URLENCODED,
        f"{URLENCODED}; charset=latin-1",
        f"{URLENCODED}; charset=bogus",
        f"multipart/form-data; boundary={BOUNDARY}",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "application/json",
        "application/json; charset=utf-16",
        "text/plain",
        "",
    ]
)


@pytest.mark.slow
async def test_fuzzed_bodies_never_get_a_5xx(
    gateway: Any, strong_browser: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway()
    b = await strong_browser(gw)
    loop = asyncio.get_running_loop()
    caplog.set_level(logging.INFO)
    answers: list[int] = []

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(path=st.sampled_from(POST_PATHS), content_type=_content_types, body=_bodies)
    def probe(path: str, content_type: str, body: bytes) -> None:
        headers = {"Content-Type": content_type} if content_type else {}

        async def send() -> int:
            async with b.client.post(gw.url + path, data=body, headers=headers) as r:
                await r.read()
                return r.status

        status = asyncio.run_coroutine_threadsafe(send(), loop).result(timeout=20)
        answers.append(status)
        assert status < 500, (path, content_type, body[:100], status)

    # hypothesis drives a synchronous function: run it in a thread while this loop serves
    await asyncio.to_thread(probe)
    assert len(answers) >= 50
    assert _tracebacks(caplog) == []
