"""Domain errors become pages here, and only here: ``GatewayError`` → its page and status,
anything unexpected → a 500 page without a traceback (STYLE: one middleware)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.exc import OperationalError

from gateway._errors import GatewayError, LoginRefused, MalformedBody, StoreUnavailable
from gateway._log_safety import log_safe
from gateway._metrics import FAILURE_PAGES
from gateway._state import (
    METRICS,
    UPSTREAM_ROUTE,
)
from gateway.web._firm_access import login_refused_page, refusal_text
from gateway.web._pages import (
    render_page,
)

log = logging.getLogger("gateway")


def _log_path(request: web.Request) -> str:
    """The path for a log line: our own routes with variable parts by their pattern.

    SECURITY: such parts can be secrets (the activation link's token lets its holder set
    the account's password), and logs are read by more people than the store. The path is
    decoded (``%0d%0a`` is CR LF): escaped by ``log_safe`` so it cannot forge a line.
    """
    route = request.match_info.route
    resource = route.resource
    if route.name != UPSTREAM_ROUTE and isinstance(resource, web.DynamicResource):
        return resource.canonical
    return log_safe(request.path)


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
            log.info("%s on %s: %s", type(exc).__name__, _log_path(request), log_safe(exc.detail))
            if isinstance(exc, MalformedBody) and request.content_type == "application/json":
                # Our passkey script posts JSON and reads JSON back.
                return web.json_response({"error": exc.page}, status=exc.status)
            if isinstance(exc, LoginRefused):
                if request.content_type == "application/json":
                    # The passkey script shows ``error`` on its page.
                    return web.json_response(
                        {"error": refusal_text(request, exc.refusal)}, status=exc.status
                    )
                return login_refused_page(request, exc.refusal)
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
            log.error(
                "store unavailable on %s %s: %s",
                log_safe(request.method),
                _log_path(request),
                log_safe(exc),
            )
            page = StoreUnavailable.page
            _count(request, page)
            return render_page(request, "error.html", {"page": page}, status=503)
        except Exception:
            log.exception("unexpected error on %s %s", log_safe(request.method), _log_path(request))
            _count(request, "error")
            return render_page(request, "error.html", {"page": "error"}, status=500)

    return impl
