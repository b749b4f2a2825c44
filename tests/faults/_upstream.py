"""The portal stand-in of the fault suite and the soak, run as its own process.

    python -m tests.faults._upstream PORT

Every path answers with JSON naming the path and every header it received (so the test
sees exactly which identity and level the gateway granted); ``/ws`` is a WebSocket that
echoes text frames. Its own process, so a test can kill it (the portal down) and bind a
listener that never answers on the same port (the portal hanging).
"""

from __future__ import annotations

import sys

from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(
        {"path": request.raw_path, "headers": {k.lower(): v for k, v in request.headers.items()}}
    )


async def websocket(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    level = request.headers.get("X-Brokergate-Level", "")
    await ws.send_str(f"level:{level}")
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            await ws.send_str("echo:" + message.data)
    return ws


def upstream_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


if __name__ == "__main__":
    web.run_app(
        upstream_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None
    )
