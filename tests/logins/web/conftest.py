"""A real gateway (TLS on 127.0.0.1, the CA, the store, an echo upstream) with the login pages.

The gateway's clock is the ``clock`` fixture; tests move it instead of sleeping.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from ca import CASettings, CertificateAuthority, load_trust_material
from gateway import (
    GatewaySettings,
    ProxyForwarder,
    RouteRule,
    create_app,
    create_server_context,
    setup_logins,
)
from gateway._metrics import GatewayMetrics
from gateway.logins import LoginSettings
from gateway.proxy._identity_headers import is_identity_header
from store import OUTBOX_PURPOSE, Level, Sealer
from tests.conftest import TEST_SECRET_KEY
from tests.gateway.conftest import ServerTLS, make_server_tls

ROUTES = (
    RouteRule(prefix="/public", level=Level.ANONYMOUS),
    RouteRule(prefix="/rechner", level=Level.RESTRICTED),
    RouteRule(prefix="/antrag", level=Level.BASIC),
    RouteRule(prefix="/vertrag", level=Level.STRONG),
)


@pytest.fixture
def server_tls(tmp_path: Path) -> ServerTLS:
    return make_server_tls(tmp_path)


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {"path": request.raw_path, "headers": {k.lower(): v for k, v in request.headers.items()}}
    )


PORTAL_PAGE = (
    '<!doctype html><html><head><title>Portal</title></head><body class="portal">'
    "<p>Gr\u00fc\u00dfe aus dem Portal</p><p id=ae>{accept_encoding}</p></body></html>"
)


async def _portal_page(request: web.Request) -> web.StreamResponse:
    """An HTML page of the portal: ``/portal/utf8`` and ``/portal/latin1`` (with an ETag),
    ``/portal/chunked`` (no Content-Length); the page shows the Accept-Encoding it got."""
    kind = request.match_info["kind"]
    text = PORTAL_PAGE.format(accept_encoding=request.headers.get("Accept-Encoding", "-"))
    if kind == "chunked":
        response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(text.encode())
        await response.write_eof()
        return response
    charset = "iso-8859-1" if kind == "latin1" else "utf-8"
    return web.Response(
        body=text.encode(charset),
        headers={"Content-Type": f"text/html; charset={charset}", "ETag": '"portal-1"'},
    )


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/portal/{kind}", _portal_page)
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def make_forwarder(upstream_url: str) -> Callable[..., Any]:
    """A buffering forwarder (the real one is gw-proxy's); strips client identity headers."""

    async def forward(
        request: web.Request,
        *,
        identity_headers: dict[str, str],
        path_qs: str | None = None,
        websocket_guard: object = None,
    ) -> web.StreamResponse:
        headers = {
            k: v
            for k, v in request.headers.items()
            if not is_identity_header(k)
            and k.lower()
            not in {"host", "connection", "transfer-encoding", "content-length", "cookie"}
        }
        headers.update(identity_headers)
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as client,
            client.request(
                request.method,
                upstream_url + (path_qs or request.raw_path),
                headers=headers,
                data=await request.read(),
            ) as response,
        ):
            return web.Response(
                body=await response.read(),
                status=response.status,
                content_type=response.content_type,
            )

    return forward


@dataclass(kw_only=True)
class Gateway:
    url: str
    app: web.Application
    tls: ServerTLS


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass(kw_only=True)
class Browser:
    """An HTTP client that keeps cookies, like a browser (no certificate unless given)."""

    gateway: Gateway
    client: aiohttp.ClientSession
    last: str = ""
    raw: bytes = b""
    history: list[str] = field(default_factory=list)

    async def get(self, path: str, **kw: Any) -> tuple[int, str]:
        async with self.client.get(
            self.gateway.url + path, allow_redirects=kw.pop("follow", True), **kw
        ) as r:
            self.last = await r.text()
            self.history.append(str(r.url))
            return r.status, self.last

    async def post(
        self, path: str, data: dict[str, str], *, follow: bool = True, csrf: bool = True
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        form = dict(data)
        if csrf and "csrf" not in form:
            form["csrf"] = self.csrf()
        async with self.client.post(
            self.gateway.url + path, data=form, allow_redirects=follow
        ) as r:
            body = await r.read()
            self.raw = body
            self.last = body.decode("utf-8", "replace")
            return r.status, self.last, r

    async def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.client.post(self.gateway.url + path, json=body, allow_redirects=False) as r:
            return r.status, await r.json()

    def csrf(self) -> str:
        match = _CSRF.search(self.last)
        assert match, "no CSRF token on the last page"
        return match.group(1)


@pytest.fixture
def login_settings() -> LoginSettings:
    return LoginSettings()


@pytest.fixture
async def gateway(
    authority: CertificateAuthority,
    ca_settings: CASettings,
    server_tls: ServerTLS,
    db_url: str,
    upstream: str,
    clock: Any,
    login_settings: LoginSettings,
    sessions: sessionmaker[Session],
) -> AsyncIterator[Callable[..., Any]]:
    """``await gateway(**gateway_settings)`` → a running gateway with the login pages."""
    runners: list[web.AppRunner] = []

    async def start(
        *,
        host: str = "127.0.0.1",
        metrics: GatewayMetrics | None = None,
        real_proxy: bool = False,
        signer: Any = None,
        **overrides: Any,
    ) -> Gateway:
        """``host``: the name brokers type (WebAuthn needs a domain: pass "localhost");
        ``metrics``: counts logins into it (as the real service does); ``real_proxy``: the
        service's streaming reverse proxy instead of the buffering test forwarder;
        ``signer``: a ``ca.SignerClient``: downloads go there, and this gateway gets no CA
        passphrase and a keyless authority (issue 12)."""
        overrides.setdefault("revocation_refresh_interval", dt.timedelta(seconds=0.2))
        overrides.setdefault("routes", ROUTES)
        with sessions() as db:
            issuing = list(load_trust_material(db).issuing_by_generation.values())
        tls_context = create_server_context(
            cert_chain=server_tls.cert, private_key=server_tls.key, client_ca_issuers=issuing
        )
        # Started first to learn the port: public_url (the passkey origin) names it.
        runner_holder: dict[str, Any] = {}

        def make_authority(factory: sessionmaker[Session]) -> CertificateAuthority:
            return CertificateAuthority(
                # SECURITY: next to a signer the gateway has no passphrase at all.
                settings=ca_settings if signer is None else CASettings(),
                sessions=factory,
                clock=clock,
                outbox_sealer=Sealer(secret=TEST_SECRET_KEY, purpose=OUTBOX_PURPOSE),
                keyless=signer is not None,
            )

        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        settings = GatewaySettings(
            upstream_url=upstream, public_url=f"https://{host}:{port}", **overrides
        )
        proxy = ProxyForwarder(settings) if real_proxy else None
        app = create_app(
            settings=settings,
            store_url=db_url,
            secret_key=TEST_SECRET_KEY,
            forward=proxy if proxy is not None else make_forwarder(upstream),
            clock=clock,
            tls_context=tls_context,
            metrics=metrics,
            extensions=[
                setup_logins(
                    settings=login_settings,
                    secret_key=TEST_SECRET_KEY,
                    make_authority=make_authority,
                    signer=signer,
                )
            ],
        )
        if proxy is not None:
            app.cleanup_ctx.append(proxy.pool_context)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls_context)
        await site.start()
        runner_holder["runner"] = runner
        return Gateway(url=f"https://{host}:{port}", app=app, tls=server_tls)

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def browser_for() -> AsyncIterator[Callable[..., Browser]]:
    clients: list[aiohttp.ClientSession] = []

    def make(
        gateway: Gateway, *, cert: tuple[Path, Path] | None = None, language: str = "de"
    ) -> Browser:
        context = ssl.create_default_context(cafile=str(gateway.tls.ca))
        if cert is not None:
            context.load_cert_chain(str(cert[0]), str(cert[1]))
        client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # 127.0.0.1 is an IP address
            headers={"Accept-Language": language},
            timeout=aiohttp.ClientTimeout(total=20),
        )
        clients.append(client)
        return Browser(gateway=gateway, client=client)

    yield make
    for client in clients:
        await client.close()


# --- mail: a real SMTP server and the renewal package's delivery (renders the real mails)


@dataclass(kw_only=True)
class Mailbox:
    server: Any
    deliver_once: Callable[[], Any]

    async def deliver(self) -> list[Any]:
        """Deliver what the outbox holds now; returns every message received so far."""
        await self.deliver_once()
        return list(self.server.sink.messages)

    async def last_text(self) -> str:
        messages = await self.deliver()
        assert messages, "no mail arrived"
        body = messages[-1].get_body(preferencelist=("plain",))
        assert body is not None
        return str(body.get_content())


@pytest.fixture
def mailbox(sessions: sessionmaker[Session], clock: Any) -> Any:
    from renewal import MailRenderer, OutboxDelivery
    from tests.renewal.conftest import SmtpServer, SmtpSink, free_port, mail_settings

    server = SmtpServer(port=free_port(), sink=SmtpSink())
    server.start()
    delivery = OutboxDelivery(
        sessions=sessions,
        settings=mail_settings(server.port),
        renderer=MailRenderer(public_url="https://127.0.0.1"),
        sealer=Sealer(secret=TEST_SECRET_KEY, purpose=OUTBOX_PURPOSE),
        clock=clock,
        jitter=lambda: 0.0,
    )
    yield Mailbox(server=server, deliver_once=delivery.deliver_due)
    server.stop()
