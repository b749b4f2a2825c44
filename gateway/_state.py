"""Typed application state (``web.AppKey``) and the per-request state the middlewares attach.

Who owns what: ``create_app`` puts settings, clock and options in the app; the
``cleanup_ctx`` of ``gateway._app`` opens (and closes) the engine, the session store,
the trust cache, the assertion signer and the refresh task.
"""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from ca import FirmSettings
from gateway._metrics import GatewayMetrics
from gateway._settings import GatewaySettings
from store import Clock

__all__ = [
    "CLOCK",
    "FACTORY",
    "FIRMS",
    "METRICS",
    "SETTINGS",
    "TLS_CONTEXT",
    "UPSTREAM_ROUTE",
]

UPSTREAM_ROUTE = "upstream"
"""The name of the catch-all route that forwards to the upstream (registered last)."""

SETTINGS = web.AppKey("settings", GatewaySettings)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
FACTORY = web.AppKey("factory", sessionmaker[Session])
FIRMS = web.AppKey("firms", FirmSettings)  # the product catalogue ([firms], issue 13)
METRICS = web.AppKey("metrics", GatewayMetrics)
TLS_CONTEXT: web.AppKey[ssl.SSLContext | None] = web.AppKey("tls_context")
REFRESH_TASK = web.AppKey("refresh_task", asyncio.Task[None])
