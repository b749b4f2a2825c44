"""brokergate dead or hanging behind the real nginx with deploy/nginx/forward-auth.conf,
and behind the real Caddy with deploy/caddy/Caddyfile (issue 18): brokers get the shipped
static page (deploy/nginx/brokergate-unavailable.html) with 503 and no-store, never the
front's bare 500/502, and within the auth subrequest's timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from ca import load_trust_material
from tests.gateway_proxy._certs import PemPair
from tests.gateway_proxy._nginx import NGINX, free_port
from tests.gateway_proxy.conftest import start_site
from tests.gateway_proxy.test_forward_auth_caddy import CADDY, _adapted, running_caddy
from tests.gateway_proxy.test_forward_auth_nginx import (
    FrontFactory,
    _context,
    _portal_saw,
    cache,
    forward_auth_app,
    front_for,
)

__all__ = ["cache", "forward_auth_app", "front_for"]  # the fixtures this module uses

needs_nginx = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="nginx is not installed (make system-deps)"
)
needs_caddy = pytest.mark.skipif(
    not Path(CADDY).exists(), reason="caddy is not installed (make system-deps)"
)
PAGE_MARK = '<meta name="brokergate-page" content="gateway_unavailable">'
HUNG_TIMEOUT = 2  # seconds: the adapted proxy_read_timeout on brokergate (shipped: 20 s)
SLACK = 1.5  # seconds a loaded 2-core machine may add (TLS, scheduling)
# What brokers ask while brokergate is away: portal pages (the decision), its own pages.
PATHS = ("/echo/home", "/_gateway/login/password?next=/echo/home")


@contextmanager
def hung_listener() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung brokergate)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)  # kept open, never read, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        for conn in held:
            conn.close()
        thread.join(5)


async def _ask(
    url: str, context: object, *, method: str = "GET"
) -> tuple[int, str, dict[str, str], float]:
    started = time.monotonic()
    connector = aiohttp.TCPConnector(ssl=context)  # type: ignore[arg-type]
    async with aiohttp.ClientSession(connector=connector) as client:
        async with client.request(method, url, allow_redirects=False, data=b"x=1") as resp:
            text = await resp.text()
            return resp.status, text, dict(resp.headers), time.monotonic() - started


def _assert_fallback(status: int, text: str, headers: dict[str, str]) -> None:
    assert status == 503, (status, text[:300])
    assert PAGE_MARK in text, text[:300]
    for line in (
        "Anmeldung gerade nicht möglich",
        "Sign-in currently unavailable",
        "Inloggen momenteel niet mogelijk",
        "in einigen Minuten erneut",
    ):
        assert line in text
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Retry-After"] == "120"


@needs_nginx
async def test_a_killed_gateway_gets_the_static_page_with_503(
    front_for: FrontFactory,
    forward_auth_app: Callable[..., web.Application],
    server_pem: PemPair,
    broker_pem: PemPair,
) -> None:
    runner, port = await start_site(forward_auth_app())
    context = _context(server_pem, broker_pem)
    try:
        async with front_for(gateway_port=port) as front:
            status, text, _, _ = await _ask(front + "/echo/home", context)
            assert status == 200 and _portal_saw(text)["x-brokergate-level"] == ["strong"]
            await runner.cleanup()  # the gateway gone: its port refuses
            for path in PATHS:
                for method in ("GET", "POST"):
                    status, text, headers, seconds = await _ask(
                        front + path, context, method=method
                    )
                    _assert_fallback(status, text, headers)
                    assert seconds < SLACK, (path, method, seconds)  # refused: at once
            # the page is nginx's internal location: no browser asks for it directly
            status, text, _, _ = await _ask(front + "/_gateway/front/unavailable.html", context)
            assert status != 200 and PAGE_MARK not in text
    finally:
        await runner.cleanup()


@needs_nginx
async def test_a_hung_gateway_gets_the_static_page_within_the_timeout(
    front_for: FrontFactory, server_pem: PemPair, broker_pem: PemPair
) -> None:
    with hung_listener() as port:
        async with front_for(gateway_port=port, gateway_read_timeout=HUNG_TIMEOUT) as front:
            for path in PATHS:
                status, text, headers, seconds = await _ask(
                    front + path, _context(server_pem, broker_pem)
                )
                _assert_fallback(status, text, headers)
                assert HUNG_TIMEOUT - 0.5 < seconds < HUNG_TIMEOUT + SLACK, (path, seconds)


@needs_nginx
async def test_the_portal_down_with_the_gateway_down_gets_the_static_page(
    front_for: FrontFactory, server_pem: PemPair, broker_pem: PemPair
) -> None:
    """Neither answers: the 502 page is asked of brokergate, which is down too; the static
    page, not nginx's bare 502 (recursive_error_pages)."""
    async with front_for(portal_port=free_port(), gateway_port=free_port()) as front:
        status, text, headers, _ = await _ask(
            front + "/_gateway/portal/unavailable", _context(server_pem, broker_pem)
        )
    _assert_fallback(status, text, headers)


@needs_nginx
async def test_answers_of_a_live_gateway_and_portal_pass_unchanged(
    front_for: FrontFactory, server_pem: PemPair, broker_pem: PemPair
) -> None:
    """The fallback takes only nginx's own errors: the portal's and brokergate's own
    answers (a 401 login page, the portal's 502 page) keep their status and body."""
    async with front_for(portal_port=free_port()) as front:
        status, text, _, _ = await _ask(front + "/echo/home", _context(server_pem, broker_pem))
        assert status == 502 and "Das Portal ist nicht erreichbar" in text, (status, text[:300])
        status, text, _, _ = await _ask(front + "/echo/home", _context(server_pem, None))
        assert status == 401 and "<title>Anmelden" in text
    assert PAGE_MARK not in text


# --- Caddy: the same gap, the same page (handle_errors in deploy/caddy/Caddyfile)


@contextmanager
def caddy_front(
    tmp_path: Path,
    server: PemPair,
    sessions: sessionmaker[Session],
    *,
    gateway_port: int,
    portal_port: int,
    gateway_timeout: float | None = None,
) -> Iterator[str]:
    bundle = tmp_path / "ca-bundle.pem"
    with sessions() as session:
        bundle.write_bytes(load_trust_material(session).bundle_pem())
    listen = free_port()
    config = _adapted(listen, server, gateway_port, portal_port, bundle, gateway_timeout)
    with running_caddy(tmp_path / "caddy", config, listen):
        yield f"https://localhost:{listen}"


@needs_caddy
async def test_a_killed_gateway_behind_caddy_gets_the_static_page_with_503(
    forward_auth_app: Callable[..., web.Application],
    upstream_url: str,
    server_pem: PemPair,
    broker_pem: PemPair,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    runner, port = await start_site(forward_auth_app("caddy"))
    context = _context(server_pem, broker_pem)
    portal = int(upstream_url.rsplit(":", 1)[1])
    try:
        with caddy_front(
            tmp_path, server_pem, sessions, gateway_port=port, portal_port=portal
        ) as front:
            status, text, _, _ = await _ask(front + "/echo/home", context)
            assert status == 200 and _portal_saw(text)["x-brokergate-level"] == ["strong"]
            await runner.cleanup()  # the gateway gone: its port refuses
            for path in PATHS:
                status, text, headers, seconds = await _ask(front + path, context)
                _assert_fallback(status, text, headers)
                assert seconds < SLACK, (path, seconds)
    finally:
        await runner.cleanup()


@needs_caddy
async def test_a_hung_gateway_behind_caddy_gets_the_static_page_within_the_timeout(
    upstream_url: str,
    server_pem: PemPair,
    broker_pem: PemPair,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    portal = int(upstream_url.rsplit(":", 1)[1])
    with (
        hung_listener() as port,
        caddy_front(
            tmp_path,
            server_pem,
            sessions,
            gateway_port=port,
            portal_port=portal,
            gateway_timeout=HUNG_TIMEOUT,
        ) as front,
    ):
        for path in PATHS:
            status, text, headers, seconds = await _ask(
                front + path, _context(server_pem, broker_pem)
            )
            _assert_fallback(status, text, headers)
            assert HUNG_TIMEOUT - 0.5 < seconds < HUNG_TIMEOUT + SLACK, (path, seconds)


@needs_caddy
async def test_the_portal_down_behind_caddy_is_not_taken_for_the_gateway(
    forward_auth_app: Callable[..., web.Application],
    server_pem: PemPair,
    broker_pem: PemPair,
    sessions: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    """After an allowed decision an error is the portal's: not the gateway's static page."""
    runner, port = await start_site(forward_auth_app("caddy"))
    try:
        with caddy_front(
            tmp_path, server_pem, sessions, gateway_port=port, portal_port=free_port()
        ) as front:
            status, text, _, _ = await _ask(front + "/echo/home", _context(server_pem, broker_pem))
    finally:
        await runner.cleanup()
    assert status == 502 and PAGE_MARK not in text, (status, text[:300])
