"""The proxy's side of the WebSocket guard: it asks, it closes both legs, it reports activity.

The guard here is a stand-in (the real one, with sessions and certificates, is tested in
tests/gateway/test_websocket_guard.py); the upstream is a real aiohttp WebSocket server
that records how its leg ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from gateway.proxy._forwarder import ProxyForwarder
from gateway.proxy._websocket_guard import WebSocketGuard
from tests.gateway_proxy._apps import IDENTITY, settings_for
from tests.gateway_proxy.conftest import start_site

UPSTREAM_CLOSES = web.AppKey("upstream_closes", asyncio.Queue[int | None])


async def _ws(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            if message.data == "push":  # the upstream talks on its own, twice
                await ws.send_str("news 1")
                await ws.send_str("news 2")
            else:
                await ws.send_str("echo:" + message.data)
    request.app[UPSTREAM_CLOSES].put_nowait(ws.close_code)
    return ws


@dataclass
class StandInGuard:
    """Answers the proxy's checks from a script; remembers what it was asked."""

    answer: Callable[[], Awaitable[str | None]]
    asked: list[bool] = field(default_factory=list)
    interval: float = 0.05

    async def check(self, active: bool) -> str | None:
        self.asked.append(active)
        return await self.answer()

    def guard(self) -> WebSocketGuard:
        return WebSocketGuard(check=self.check, interval=self.interval)


@pytest.fixture
async def closes() -> asyncio.Queue[int | None]:
    return asyncio.Queue()


@pytest.fixture
async def proxy_with(
    closes: asyncio.Queue[int | None],
) -> AsyncIterator[Callable[[WebSocketGuard | None], Awaitable[str]]]:
    """``await proxy_with(guard)`` → URL of a proxy (ProxyForwarder) to a WebSocket upstream."""
    upstream = web.Application()
    upstream[UPSTREAM_CLOSES] = closes
    upstream.router.add_get("/ws", _ws)
    upstream_runner, upstream_port = await start_site(upstream)
    runners = [upstream_runner]

    async def start(guard: WebSocketGuard | None) -> str:
        forwarder = ProxyForwarder(settings_for(f"http://127.0.0.1:{upstream_port}"))

        async def handle(request: web.Request) -> web.StreamResponse:
            return await forwarder(request, identity_headers=IDENTITY, websocket_guard=guard)

        app = web.Application()
        app.cleanup_ctx.append(forwarder.pool_context)
        app.router.add_route("*", "/{tail:.*}", handle)
        runner, port = await start_site(app)
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


async def _echo(ws: aiohttp.ClientWebSocketResponse, text: str) -> None:
    await ws.send_str(text)
    answer = await ws.receive(timeout=5)
    assert answer.type is WSMsgType.TEXT and answer.data == "echo:" + text, answer


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(200):  # bounded: 10 s
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached within 10 s")


async def test_a_no_closes_both_legs_with_1008_and_the_reason(
    proxy_with: Callable[[WebSocketGuard | None], Awaitable[str]],
    closes: asyncio.Queue[int | None],
) -> None:
    verdict: list[str | None] = [None]

    async def answer() -> str | None:
        return verdict[0]

    stand_in = StandInGuard(answer=answer)
    url = await proxy_with(stand_in.guard())
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(url + "/ws")
        await _echo(ws, "hello")
        await _until(lambda: len(stand_in.asked) >= 3)  # asked again and again, still open
        await _echo(ws, "still open")
        verdict[0] = "session ended"
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == (1008, "session ended")
        assert await asyncio.wait_for(closes.get(), 5) == 1008  # the upstream's leg too
        await ws.close()


async def test_only_the_clients_messages_count_as_activity(
    proxy_with: Callable[[WebSocketGuard | None], Awaitable[str]],
) -> None:
    async def allowed() -> None:
        return None

    stand_in = StandInGuard(answer=allowed)
    url = await proxy_with(stand_in.guard())
    async with aiohttp.ClientSession() as client, client.ws_connect(url + "/ws") as ws:
        await _until(lambda: len(stand_in.asked) >= 1)
        assert not any(stand_in.asked)  # nothing sent yet
        before = len(stand_in.asked)
        await _echo(ws, "typed")
        await _until(lambda: len(stand_in.asked) >= before + 2)
        assert stand_in.asked[before:].count(True) == 1  # reported once, then reset
        # the upstream pushing (answers to one client message) is not the broker's activity
        await ws.send_str("push")
        assert (await ws.receive(timeout=5)).data == "news 1"
        assert (await ws.receive(timeout=5)).data == "news 2"
        after = len(stand_in.asked)
        await _until(lambda: len(stand_in.asked) >= after + 3)
        assert stand_in.asked[after + 1 :].count(True) == 0


async def test_a_failing_guard_closes_both_legs_with_1011(
    proxy_with: Callable[[WebSocketGuard | None], Awaitable[str]],
    closes: asyncio.Queue[int | None],
) -> None:
    async def broken() -> str | None:
        raise ConnectionError("store unreachable")

    url = await proxy_with(StandInGuard(answer=broken).guard())
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(url + "/ws")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == (1011, "server error")  # fail closed
        assert await asyncio.wait_for(closes.get(), 5) == 1011
        await ws.close()


async def test_without_a_guard_the_socket_is_not_watched(
    proxy_with: Callable[[WebSocketGuard | None], Awaitable[str]],
    closes: asyncio.Queue[int | None],
) -> None:
    url = await proxy_with(None)
    async with aiohttp.ClientSession() as client:
        ws = await client.ws_connect(url + "/ws")
        await _echo(ws, "plain")
        await ws.close()
        assert await asyncio.wait_for(closes.get(), 5) == 1000
