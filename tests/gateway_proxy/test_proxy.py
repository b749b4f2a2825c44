"""The reverse proxy against a real aiohttp upstream on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway._metrics import GatewayMetrics
from tests.gateway_proxy._apps import IDENTITY, gateway_app, settings_for
from tests.gateway_proxy.conftest import StartGateway, start_site
from tests.polling import async_wait_for


async def _echo(gateway_url: str, path: str = "/echo", **kwargs: Any) -> dict[str, Any]:
    method = kwargs.pop("method", "GET")
    async with aiohttp.ClientSession() as client:
        async with client.request(method, gateway_url + path, **kwargs) as resp:
            assert resp.status == 200, await resp.text()
            data: dict[str, Any] = await resp.json()
            return data


def _headers(echoed: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in echoed["headers"]]


def _values(echoed: dict[str, Any], name: str) -> list[str]:
    return [v for n, v in _headers(echoed) if n.lower() == name.lower()]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_method_and_the_body_arrive(gateway_url: str, method: str) -> None:
    body = b"payload " * 1000 if method in ("POST", "PUT", "PATCH") else None
    echoed = await _echo(gateway_url, "/echo/a%2Fb?q=1&q=2", method=method, data=body)
    assert echoed["method"] == method
    assert echoed["path_qs"] == "/echo/a%2Fb?q=1&q=2"  # forwarded as sent, not re-quoted
    assert echoed["body_size"] == (len(body) if body else 0)
    if body:
        assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_head_request(gateway_url: str) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.head(gateway_url + "/download?size=1000&length=1") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == "1000"
            assert await resp.read() == b""


async def test_identity_headers_added(gateway_url: str) -> None:
    echoed = await _echo(gateway_url)
    for name, value in IDENTITY.items():
        assert _values(echoed, name) == [value]


SPOOFED_SPELLINGS = [
    "X-Brokergate-User-Id",
    "x-brokergate-user-id",
    "X-BROKERGATE-USER-ID",
    "X_Brokergate_User_Id",
    "x_brokergate_user-id",
    "X-Brokergate_Level",
    "X-Brokergate-Assertion",
    "X-Brokergate-Anything-New",
]


@pytest.mark.parametrize("name", SPOOFED_SPELLINGS)
async def test_spoofed_identity_headers_never_reach_upstream(gateway_url: str, name: str) -> None:
    echoed = await _echo(gateway_url, headers={name: "evil"})
    assert all(value != "evil" for _, value in _headers(echoed)), echoed["headers"]
    for expected_name, value in IDENTITY.items():
        assert _values(echoed, expected_name) == [value]


async def _raw_request(url: str, request: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as given (aiohttp's client would normalise header names)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    await writer.wait_closed()
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


async def test_raw_socket_spoofing_all_spellings(start_gateway: StartGateway) -> None:
    url = await start_gateway()
    spoof = b"".join(
        name.encode() + b": evil-" + str(i).encode() + b"\r\n"
        for i, name in enumerate([*SPOOFED_SPELLINGS, "x-bRoKeRgAtE-lEvEl", "X-Brokergate-Level"])
    )
    request = (
        b"GET /echo HTTP/1.1\r\nHost: portal.example\r\n"
        + spoof
        + b"X-Brokergate-Level: strong-evil\r\nConnection: close\r\n\r\n"
    )
    status, body = await _raw_request(url, request)
    assert status == 200
    assert b"evil" not in body
    echoed = json.loads(body)
    assert _values(echoed, "X-Brokergate-Level") == ["strong"]


async def test_raw_socket_header_with_space_before_colon_is_refused(
    start_gateway: StartGateway,
) -> None:
    # Some servers fold "X-Brokergate-Level : x" into the header; aiohttp must reject it.
    url = await start_gateway()
    request = (
        b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Brokergate-Level : evil\r\nConnection: close\r\n\r\n"
    )
    status, body = await _raw_request(url, request)
    assert status == 400
    assert b"path_qs" not in body  # refused by the gateway, never reached the upstream


async def test_hop_by_hop_headers_removed_both_ways(gateway_url: str) -> None:
    echoed = await _echo(
        gateway_url,
        headers={
            "Connection": "keep-alive, X-Private-Hop",
            "X-Private-Hop": "secret",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Upgrade": "h2c",
            "Proxy_Authorization": "Basic eDp5",  # CGI/WSGI would read it as the real one
            "Transfer_Encoding": "chunked",
            "X-Kept": "yes",
        },
    )
    names = {name.lower().replace("_", "-") for name, _ in _headers(echoed)}
    for hop in ("x-private-hop", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert hop not in names
    assert "transfer-encoding" not in names
    assert _values(echoed, "X-Kept") == ["yes"]
    # Connection to the upstream is the pool's own keep-alive, not the client's list.
    assert "X-Private-Hop" not in " ".join(_values(echoed, "Connection"))

    async with aiohttp.ClientSession() as client:
        async with client.get(gateway_url + "/redirect", allow_redirects=False) as resp:
            assert "X-Upstream-Private" not in resp.headers
            assert "Keep-Alive" not in resp.headers


async def test_redirect_and_set_cookie_unchanged(gateway_url: str) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway_url + "/redirect", allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "/elsewhere?x=%2F"
            assert resp.headers.getall("Set-Cookie") == [
                "portal=abc; Path=/; HttpOnly",
                "lang=de; Path=/",
            ]


async def test_upstream_cookies_not_shared_between_clients(gateway_url: str) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway_url + "/redirect", allow_redirects=False):
            pass
    echoed = await _echo(gateway_url)  # a different client, same pool
    assert _values(echoed, "Cookie") == []


async def test_gateway_cookie_not_forwarded(gateway_url: str) -> None:
    cookie = "a=1; __Host-bgsession=SECRET; b=2; __Host-bgcsrf=SECRET2; __Host-other=3"
    echoed = await _echo(gateway_url, headers={"Cookie": cookie})
    assert _values(echoed, "Cookie") == ["a=1; b=2; __Host-other=3"]
    only_ours = await _echo(gateway_url, headers={"Cookie": "__Host-bgsession=SECRET"})
    assert _values(only_ours, "Cookie") == []


async def test_forwarded_headers_replaced_for_untrusted_peer(gateway_url: str) -> None:
    echoed = await _echo(
        gateway_url,
        headers={
            "Host": "portal.example:8443",
            "X-Forwarded-For": "6.6.6.6",
            "X_Forwarded_For": "7.7.7.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
        },
    )
    assert _values(echoed, "X-Forwarded-For") == ["127.0.0.1"]
    assert _values(echoed, "X-Forwarded-Proto") == ["http"]
    assert _values(echoed, "X-Forwarded-Host") == ["portal.example:8443"]
    assert _values(echoed, "Forwarded") == []
    assert _values(echoed, "X_Forwarded_For") == []
    assert _values(echoed, "Host") == ["portal.example:8443"]


async def test_forwarded_headers_extended_for_trusted_peer(start_gateway: StartGateway) -> None:
    url = await start_gateway(trusted_proxies=("127.0.0.0/8",))
    echoed = await _echo(
        url,
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "portal.example",
        },
    )
    assert _values(echoed, "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    assert _values(echoed, "X-Forwarded-Proto") == ["https"]
    assert _values(echoed, "X-Forwarded-Host") == ["portal.example"]


async def test_direct_mode_never_forwards_certificate_headers(gateway_url: str) -> None:
    echoed = await _echo(
        gateway_url, headers={"X-SSL-Client-Cert": "x", "X-Forwarded-Client-Cert": "Cert=y"}
    )
    assert _values(echoed, "X-SSL-Client-Cert") == []
    assert _values(echoed, "X-Forwarded-Client-Cert") == []


async def test_terminator_certificate_header_not_forwarded(start_gateway: StartGateway) -> None:
    url = await start_gateway(
        trusted_proxies=("127.0.0.1",), terminator_format="nginx", client_cert_header="X-SSL-Cert"
    )
    echoed = await _echo(url, headers={"X-SSL-Cert": "-----BEGIN", "X_SSL_Cert": "x"})
    assert _values(echoed, "X-SSL-Cert") == [] and _values(echoed, "X_SSL_Cert") == []


async def test_streamed_download(gateway_url: str) -> None:
    size = 5 * 1024 * 1024 + 7
    digest = hashlib.sha256()
    received = 0
    async with aiohttp.ClientSession() as client:
        async with client.get(gateway_url + f"/download?size={size}") as resp:
            assert resp.status == 200
            assert resp.headers.get("Transfer-Encoding") == "chunked"
            async for chunk in resp.content.iter_any():
                digest.update(chunk)
                received += len(chunk)
    assert received == size


async def test_upstream_down_is_502(start_gateway: StartGateway) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]  # bound, never listening: connection refused
        url = await start_gateway(upstream=f"http://127.0.0.1:{dead_port}")
        async with aiohttp.ClientSession() as client:
            async with client.get(url + "/echo") as resp:
                assert resp.status == 502
                assert await resp.text() == "page:upstream_unavailable"


async def test_upstream_slow_is_504(start_gateway: StartGateway) -> None:
    from datetime import timedelta

    url = await start_gateway(upstream_read_timeout=timedelta(milliseconds=300))
    async with aiohttp.ClientSession() as client:
        async with client.get(url + "/slow?delay=3") as resp:
            assert resp.status == 504
            assert await resp.text() == "page:upstream_timeout"
        # and a fast request on the same gateway still works
        async with client.get(url + "/slow?delay=0") as resp:
            assert resp.status == 200


async def test_upstream_stalls_mid_body_aborts_client(start_gateway: StartGateway) -> None:
    from datetime import timedelta

    url = await start_gateway(upstream_read_timeout=timedelta(milliseconds=300))
    async with aiohttp.ClientSession() as client:
        async with client.get(url + "/stall-body") as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()


async def test_upstream_stalls_in_small_body_is_504(start_gateway: StartGateway) -> None:
    # A small body of known length is read before anything is sent: still a page.
    from datetime import timedelta

    url = await start_gateway(upstream_read_timeout=timedelta(milliseconds=300))
    async with aiohttp.ClientSession() as client:
        async with client.get(url + "/stall-body?known=1") as resp:
            assert resp.status == 504
            assert await resp.text() == "page:upstream_timeout"


async def test_upstream_latency_recorded(upstream_url: str) -> None:
    metrics = GatewayMetrics()
    runner, port = await start_site(gateway_app(settings_for(upstream_url), metrics=metrics))
    try:
        await _echo(f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
    assert metrics.upstream_latency.labels(status_class="2xx")._sum.get() > 0


async def test_websocket_echo_through_proxy(gateway_url: str) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(
            gateway_url + "/ws",
            protocols=("chat.v1",),
            headers={"X-Brokergate-Level": "evil", "Cookie": "__Host-bgsession=S; a=1"},
        ) as ws:
            assert ws.protocol == "chat.v1"
            hello = json.loads((await ws.receive(timeout=5)).data)
            upstream_headers = {k.lower(): v for k, v in hello["headers"].items()}
            assert upstream_headers["x-brokergate-level"] == "strong"
            assert upstream_headers["cookie"] == "a=1"
            await ws.send_str("hi")
            assert (await ws.receive(timeout=5)).data == "echo:hi"
            await ws.send_bytes(b"\x01\x02\x03")
            assert (await ws.receive(timeout=5)).data == b"\x03\x02\x01"
            await ws.send_str("close-4001")
            closing = await ws.receive(timeout=5)
            assert closing.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == 4001


async def test_websocket_client_close_reaches_upstream(gateway_url: str) -> None:
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(gateway_url + "/ws")
        await ws.receive(timeout=5)
        await ws.close()
        assert ws.close_code == 1000


async def test_websocket_upstream_down_is_502(start_gateway: StartGateway) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = await start_gateway(upstream=f"http://127.0.0.1:{sock.getsockname()[1]}")
        async with aiohttp.ClientSession() as client:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await client.ws_connect(url + "/ws")
            assert info.value.status == 502


async def test_session_cookie_names_not_forwarded(start_gateway: StartGateway) -> None:
    default = await start_gateway()  # gateway.session_cookie_name = "__Host-brokergate"
    echoed = await _echo(
        default, headers={"Cookie": "__Host-brokergate=S; __HOST-BROKERGATE-x=T; a=1"}
    )
    assert _values(echoed, "Cookie") == ["a=1"]
    custom = await start_gateway(session_cookie_name="__Host-portalsso")
    echoed = await _echo(custom, headers={"Cookie": "__Host-portalsso=S; __Host-other=1"})
    assert _values(echoed, "Cookie") == ["__Host-other=1"]


async def test_gateway_cookie_header_stripping_is_exact(gateway_url: str) -> None:
    # A cookie merely containing the prefix elsewhere in its name is not ours.
    echoed = await _echo(gateway_url, headers={"Cookie": "x__Host-bg=1; __Host-bg=2"})
    assert _values(echoed, "Cookie") == ["x__Host-bg=1"]


def test_app_type() -> None:
    assert isinstance(gateway_app(settings_for("http://127.0.0.1:1")), web.Application)


@pytest.mark.parametrize("path", ["/set-gateway-cookies", "/set-gateway-cookies?stream=1"])
async def test_upstream_cannot_set_gateway_cookies(start_gateway: StartGateway, path: str) -> None:
    default = await start_gateway()
    async with aiohttp.ClientSession() as client:
        async with client.get(default + path) as resp:
            assert resp.status == 200
            assert resp.headers.getall("Set-Cookie") == [
                "__Host-portalsso=fixated; Path=/; Secure",  # not a gateway cookie here
                "portal=ok; Path=/",
            ]
    custom = await start_gateway(session_cookie_name="__Host-portalsso")
    async with aiohttp.ClientSession() as client:
        async with client.get(custom + path) as resp:
            assert resp.headers.getall("Set-Cookie") == ["portal=ok; Path=/"]


async def test_client_leaving_mid_upload_is_no_error(
    start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser that closes the connection half way through an upload (tab closed) is
    normal life: the upstream exchange is dropped, nothing is logged as an error, and the
    gateway serves the next request."""
    url = await start_gateway()
    host, port = url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 300_000
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    # The upstream's handler sees its body break off: the gateway dropped the exchange.
    # (That line comes from the upstream's aiohttp server, which shares this process.)
    await async_wait_for(  # a few loop turns in practice
        lambda: any("Error handling request" in r.getMessage() for r in caplog.records),
        timeout=5,
        interval=0.02,
        message="the upstream never saw the upload break off",
    )
    assert (await _echo(url))["method"] == "GET"
    errors = [
        r
        for r in caplog.records
        if r.levelname in ("ERROR", "CRITICAL") and r.name.startswith("gateway")
    ]
    assert errors == [], [r.getMessage() for r in errors]
