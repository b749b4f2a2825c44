"""Prometheus metrics of the gateway, on their own registry and their own listener.

API (what the rest of the gateway calls)::

    metrics = GatewayMetrics()                       # one per app; owns its CollectorRegistry
    metrics.record_handshake("valid")                # HANDSHAKE_RESULTS
    metrics.record_login("totp", "success")          # method, outcome (LOGIN_OUTCOMES)
    metrics.observe_upstream(0.012, status=200)      # seconds; the proxy calls it
    metrics.record_failure_page("store_unavailable") # the error middleware (FAILURE_PAGES)
    metrics.record_worker_restarts(1)                # a restarted worker, once at its start
    metrics.refresh_from_store(sessions, now=clock(), idle_timeout=timedelta(minutes=15))
    body, content_type = metrics.render()
    app = metrics_app(metrics, refresh=lambda: metrics.refresh_from_store(...))
    runner = await start_metrics_listener(app, host="127.0.0.1", port=9464)

Why a registry per app and not prometheus-client's global one: tests build many apps in
one process, and two gateways in one interpreter must not count into each other.

The two store-derived gauges (active sessions, certificates expiring within 60 days) are
the same figure on every replica, since the state lives in the database; they are computed
from the store when scraped, at most once per ``min_refresh_interval`` (a scrape storm
must not become a query storm), in a thread so the event loop never waits for the DB.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from store import Certificate, CertificateStatus, WebSession

# What the TLS/identity layer saw on a new connection (label values of handshakes_total).
HANDSHAKE_RESULTS = (
    "valid",  # a certificate of ours that validated
    "none",  # no client certificate presented
    "expired",
    "not_yet_valid",
    "revoked",
    "unknown_issuer",  # not one of our non-retired generations (another insurer's, say)
    "invalid",  # anything else: bad chain, wrong EKU, unparsable, no active user
)
LOGIN_METHODS = ("certificate", "totp", "passkey", "email-tan", "password")
# The pages that say something is broken on our side (label values of failure_pages_total):
# the store or the portal unavailable, the portal too slow, an unexpected error (500).
FAILURE_PAGES = ("store_unavailable", "upstream_unavailable", "upstream_timeout", "error")
LOGIN_OUTCOMES = ("success", "failure", "locked")
# Why the HTTPS listener closed a connection (gateway/tls/_listener.py, CLOSE_REASONS).
CONNECTION_CLOSE_REASONS = (
    "tls_handshake_timeout",
    "tls_handshake_failed",
    "handshake_message_too_large",  # a client certificate over gateway.tls' message limit
    "first_request_timeout",
    "request_head_timeout",
    "keepalive_timeout",
)

_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
EXPIRY_WINDOW = timedelta(days=60)  # the renewal reminder goes out two months before expiry
DEFAULT_METRICS_PORT = 9464  # Prometheus' registered default-port range for exporters
# Upstream latency buckets: a portal page is 5 ms … a few seconds; the top bucket sits near
# the default upstream read timeout so timeouts show up as the +Inf tail.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class UnknownMetricLabel(ValueError):
    """A label value outside the documented set (keeps label cardinality bounded)."""

    def __init__(self, metric: str, value: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"{metric}: {value!r} is not a known label value; use one of {', '.join(allowed)}"
        )


class GatewayMetrics:
    """The gateway's metrics. Owns one :class:`CollectorRegistry` (``.registry``).

    Args:
        min_refresh_interval: the store-derived gauges are recomputed at most this often.
        monotonic: injectable monotonic clock (seconds) for the refresh throttle.
    """

    def __init__(
        self,
        *,
        min_refresh_interval: float = 15.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.handshakes = Counter(
            "brokergate_handshakes",
            "Client-certificate outcomes of new TLS connections (or terminator requests)",
            ["result"],
            registry=self.registry,
        )
        self.logins = Counter(
            "brokergate_logins",
            "Logins by method and outcome",
            ["method", "outcome"],
            registry=self.registry,
        )
        self.active_sessions = Gauge(
            "brokergate_active_sessions",
            "Sessions not ended, not idle-expired and within their absolute lifetime (store-wide)",
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "brokergate_upstream_latency_seconds",
            "Time from sending the request upstream to receiving its response headers",
            ["status_class"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.certificates_expiring = Gauge(
            "brokergate_certificates_expiring_60d",
            "Valid (not revoked) certificates whose not-after is within the next 60 days",
            registry=self.registry,
        )
        self.failure_pages = Counter(
            "brokergate_failure_pages",
            "Pages that tell a broker something is broken on our side, by page: the store "
            "(503) or the portal (502/504) unavailable, an unexpected error (500)",
            ["page"],
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "brokergate_worker_restarts",
            "Times the supervisor restarted this worker (gateway serve --workers N) after it "
            "died; the count of its earlier lives, carried into the new process",
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "brokergate_connections_closed",
            "Connections the gateway closed because they overran a bound of the HTTPS "
            "listener (tls_handshake_timeout, first_request_timeout, request_head_timeout, "
            "keepalive_timeout) or failed their TLS handshake",
            ["reason"],
            registry=self.registry,
        )
        self.client_ca_name_update_failures = Counter(
            "brokergate_client_ca_name_update_failures",
            "Run-time updates of the CA names in the TLS CertificateRequest that failed "
            "(after a CA rotation or retirement); the previous list stays in use",
            registry=self.registry,
        )
        self._min_refresh_interval = min_refresh_interval
        self._monotonic = monotonic
        self._last_refresh: float | None = None
        self._latency_children: dict[str, Histogram] = {}
        # Pre-create the label children so dashboards see zeros rather than gaps.
        for result in HANDSHAKE_RESULTS:
            self.handshakes.labels(result=result)
        for method in LOGIN_METHODS:
            for outcome in LOGIN_OUTCOMES:
                self.logins.labels(method=method, outcome=outcome)
        for page in FAILURE_PAGES:
            self.failure_pages.labels(page=page)
        for reason in CONNECTION_CLOSE_REASONS:
            self.connections_closed.labels(reason=reason)

    def record_handshake(self, result: str) -> None:
        """Count one client-certificate outcome; ``result`` is one of HANDSHAKE_RESULTS."""
        if result not in HANDSHAKE_RESULTS:
            raise UnknownMetricLabel("handshakes", result, HANDSHAKE_RESULTS)
        self.handshakes.labels(result=result).inc()

    def record_login(self, method: str, outcome: str) -> None:
        """Count one login attempt (one of LOGIN_METHODS, one of LOGIN_OUTCOMES)."""
        if method not in LOGIN_METHODS:
            raise UnknownMetricLabel("logins.method", method, LOGIN_METHODS)
        if outcome not in LOGIN_OUTCOMES:
            raise UnknownMetricLabel("logins.outcome", outcome, LOGIN_OUTCOMES)
        self.logins.labels(method=method, outcome=outcome).inc()

    def record_failure_page(self, page: str) -> None:
        """Count one failure page shown (``page`` is one of FAILURE_PAGES)."""
        if page not in FAILURE_PAGES:
            raise UnknownMetricLabel("failure_pages", page, FAILURE_PAGES)
        self.failure_pages.labels(page=page).inc()

    def record_connection_closed(self, reason: str) -> None:
        if reason not in CONNECTION_CLOSE_REASONS:
            raise UnknownMetricLabel("connections_closed", reason, CONNECTION_CLOSE_REASONS)
        self.connections_closed.labels(reason=reason).inc()

    def record_worker_restarts(self, restarts: int) -> None:
        """Called once when a worker starts: how often its slot was restarted before."""
        if restarts < 0:
            raise ValueError("restarts cannot be negative")
        self.worker_restarts.inc(restarts)

    def observe_upstream(self, seconds: float, *, status: int | None) -> None:
        """Record one upstream round trip; ``status=None`` means no response (error/timeout)."""
        status_class = (
            _STATUS_CLASSES.get(status // 100, "other") if status is not None else "error"
        )
        child = self._latency_children.get(status_class)
        if child is None:  # labels() costs a lock and a tuple per call: once per class
            child = self._latency_children[status_class] = self.upstream_latency.labels(
                status_class=status_class
            )
        child.observe(seconds)

    def refresh_from_store(
        self,
        sessions: sessionmaker[Session],
        *,
        now: datetime,
        idle_timeout: timedelta | None,
        force: bool = False,
    ) -> bool:
        """Recompute the store-derived gauges unless done within ``min_refresh_interval``.

        Blocking (one or two COUNT queries): call it from a thread, as :func:`metrics_app` does.

        Returns:
            True if the store was queried.
        """
        tick = self._monotonic()
        if (
            not force
            and self._last_refresh is not None
            and tick - self._last_refresh < self._min_refresh_interval
        ):
            return False
        with sessions() as session:
            active = count_active_sessions(session, now=now, idle_timeout=idle_timeout)
            expiring = count_certificates_expiring(session, now=now, within=EXPIRY_WINDOW)
        self.active_sessions.set(active)
        self.certificates_expiring.set(expiring)
        self._last_refresh = tick
        return True

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def count_active_sessions(
    session: Session, *, now: datetime, idle_timeout: timedelta | None
) -> int:
    """Sessions that would still be accepted at ``now``."""
    query = (
        select(func.count())
        .select_from(WebSession)
        .where(WebSession.ended_at.is_(None), WebSession.absolute_expires_at > now)
    )
    if idle_timeout is not None:
        query = query.where(WebSession.last_seen_at > now - idle_timeout)
    return int(session.scalar(query) or 0)


def count_certificates_expiring(session: Session, *, now: datetime, within: timedelta) -> int:
    """Valid certificates with ``now < not_after <= now + within`` (expired ones not)."""
    query = (
        select(func.count())
        .select_from(Certificate)
        .where(
            Certificate.status == CertificateStatus.VALID,
            Certificate.not_after > now,
            Certificate.not_after <= now + within,
        )
    )
    return int(session.scalar(query) or 0)


METRICS_KEY = web.AppKey("brokergate_metrics", GatewayMetrics)


def metrics_app(
    metrics: GatewayMetrics, *, refresh: Callable[[], object] | None = None
) -> web.Application:
    """A tiny app serving ``GET /metrics``; run it on its own (loopback) listener.

    Args:
        metrics: the gateway's metrics.
        refresh: called (in a thread) before each scrape, e.g. a closure over
            :meth:`GatewayMetrics.refresh_from_store`; its errors are logged by aiohttp and
            answered with 500 so a broken store shows up as a failed scrape, not stale zeros.
    """

    async def handle(request: web.Request) -> web.Response:
        if refresh is not None:
            await asyncio.to_thread(refresh)
        body, content_type = metrics.render()
        # content_type carries parameters (version, charset); aiohttp wants them in the header.
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app[METRICS_KEY] = metrics
    app.router.add_get("/metrics", handle)
    return app


async def start_metrics_listener(app: web.Application, *, host: str, port: int) -> web.AppRunner:
    """Start ``app`` on host:port; the caller owns the runner and calls ``runner.cleanup()``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
