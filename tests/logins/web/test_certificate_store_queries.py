"""A known certificate costs no store query per request on the login pages' middleware,
even for a client that keeps no cookies (curl, API clients, load tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority
from tests.logins.web.test_session_levels import certificate_browser


async def test_cookieless_certificate_client_costs_no_query_per_request(
    gateway: Any,
    browser_for: Any,
    make_user: Any,
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    tmp_path: Path,
) -> None:
    """A client without cookies (curl, API, load test) gets its certificate session back
    from memory, with a Set-Cookie each time. The login pages' middleware took every such
    Set-Cookie for a new certificate login and locked the certificate's row (SELECT … FOR
    UPDATE) on every request, breaking "no store query per request for a known
    certificate". It now notes a certificate's first use once per replica."""
    from sqlalchemy import event

    from gateway._state import FACTORY

    gw = await gateway()
    uid = make_user(email="anna@example.org").id
    laptop, _ = await certificate_browser(gw, browser_for, authority, sessions, uid, tmp_path)

    async def get() -> int:
        laptop.client.cookie_jar.clear()  # keeps no cookies
        return int((await laptop.get("/vertrag"))[0])

    assert await get() == 200
    assert await get() == 200  # warm
    statements: list[str] = []
    engine = gw.app[FACTORY].kw["bind"]

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(20):
            assert await get() == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    certificate_reads = [s for s in statements if "FROM certificates" in s]
    assert len(certificate_reads) < 5, certificate_reads
