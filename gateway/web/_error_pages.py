"""Domain errors become pages here, and only here: ``GatewayError`` → its page and status,
anything unexpected → a 500 page without a traceback (STYLE: one middleware)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.exc import OperationalError

from gateway._errors import GatewayError, StoreUnavailable
from gateway._metrics import FAILURE_PAGES
from gateway._state import (
    METRICS,
    UPSTREAM_ROUTE,
)
from gateway.web._pages import (
    render_page,
)

log = logging.getLogger("gateway")


def _log_path(request: web.Request) -> str:
    """The path for a log line: our own routes with variable parts by their pattern.

    SECURITY: such parts can be secrets (the activation link's token lets its holder set
    the account's password), and logs are read by more people than the store.
    """
    route = request.match_info.route
    resource = route.resource
    if route.name != UPSTREAM_ROUTE and isinstance(resource, web.DynamicResource):
        return resource.canonical
    return request.path


def _count(request: web.Request, page: str) -> None:
    """The failure pages (store or portal unavailable, 500) are what operators alert on."""
    metrics = request.app.get(METRICS)
    if metrics is not None and page in FAILURE_PAGES:
        metrics.record_failure_page(page)


def error_middleware() -> Any:
    """Factory: ``GatewayError`` → its page and status; anything unexpected → a 500 page."""

    @web.middleware
    async def impl(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            log.info("%s on %s: %s", type(exc).__name__, _log_path(request), exc.detail)
            _count(request, exc.page)
            return render_page(request, "error.html", {"page": exc.page}, status=exc.status)
        except web.HTTPNotFound:
            return render_page(request, "error.html", {"page": "not_found"}, status=404)
        except web.HTTPException:
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except OperationalError as exc:
            # The store went away under a handler (the auth middleware maps its own reads
            # to StoreUnavailable; the login pages and session writes do not): fail closed
            # with the same page.
            log.error("store unavailable on %s %s: %s", request.method, _log_path(request), exc)
            page = StoreUnavailable.page
            _count(request, page)
            return render_page(request, "error.html", {"page": page}, status=503)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, _log_path(request))
            _count(request, "error")
            return render_page(request, "error.html", {"page": "error"}, status=500)

    return impl
