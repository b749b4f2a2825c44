"""Metrics: own registry per app, label sets, store-derived gauges (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from ca import create_user
from gateway._metrics import (
    GatewayMetrics,
    UnknownMetricLabel,
    metrics_app,
    start_metrics_listener,
)
from store import (
    CAGeneration,
    CARoot,
    Certificate,
    CertificateStatus,
    GenerationStatus,
    Level,
    RootStatus,
    WebSession,
    transaction,
)
from tests.conftest import FakeClock, free_port


def _samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render()
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_registries_are_independent() -> None:
    one, two = GatewayMetrics(), GatewayMetrics()
    one.record_handshake("valid")
    one.record_handshake("valid")
    two.record_handshake("revoked")
    assert _samples(one)[("brokergate_handshakes_total", (("result", "valid"),))] == 2
    assert _samples(two)[("brokergate_handshakes_total", (("result", "valid"),))] == 0
    assert _samples(two)[("brokergate_handshakes_total", (("result", "revoked"),))] == 1


def test_logins_and_latency() -> None:
    metrics = GatewayMetrics()
    metrics.record_login("totp", "success")
    metrics.record_login("email-tan", "failure")
    metrics.observe_upstream(0.02, status=200)
    metrics.observe_upstream(31.0, status=None)
    samples = _samples(metrics)
    assert samples[("brokergate_logins_total", (("method", "totp"), ("outcome", "success")))] == 1
    assert (
        samples[("brokergate_logins_total", (("method", "email-tan"), ("outcome", "failure")))] == 1
    )
    passkey = ("brokergate_logins_total", (("method", "passkey"), ("outcome", "success")))
    assert samples[passkey] == 0
    bucket = (("le", "0.025"), ("status_class", "2xx"))
    assert samples[("brokergate_upstream_latency_seconds_bucket", bucket)] == 1
    assert samples[("brokergate_upstream_latency_seconds_count", (("status_class", "error"),))] == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.record_handshake("ok"), "'ok' is not a known label value"),
        (lambda m: m.record_login("sms", "success"), "'sms'"),
        (lambda m: m.record_login("totp", "maybe"), "'maybe'"),
    ],
)
def test_unknown_labels_are_refused(call: object, message: str) -> None:
    metrics = GatewayMetrics()
    with pytest.raises(UnknownMetricLabel, match=message):
        call(metrics)  # type: ignore[operator]


def _seed(sessions: sessionmaker[Session], clock: FakeClock) -> None:
    now = clock()
    with transaction(sessions) as s:
        root = CARoot(
            subject="CN=root",
            cert_pem="-",
            key_pem_encrypted="-",
            status=RootStatus.ACTIVE,
            not_before=now,
            not_after=now + timedelta(days=3650),
            created_at=now,
        )
        s.add(root)
        s.flush()
        s.add(
            CAGeneration(
                id=1,
                root_id=root.id,
                subject="CN=issuing 1",
                cert_pem="-",
                key_pem_encrypted="-",
                key_type="ec",
                status=GenerationStatus.ACTIVE,
                not_before=now,
                not_after=now + timedelta(days=1500),
                created_at=now,
            )
        )
        user = create_user(
            s, broker_number="12/345/6789", email="a@example.org", name="A", now=now, actor="t"
        )
        # expiring in 10 d (counts), in 59 d (counts), in 61 d (no), expired (no), revoked (no)
        cases = [(10, CertificateStatus.VALID), (59, CertificateStatus.VALID)]
        cases += [(61, CertificateStatus.VALID), (-1, CertificateStatus.VALID)]
        cases += [(5, CertificateStatus.REVOKED)]
        for i, (days, status) in enumerate(cases):
            s.add(
                Certificate(
                    serial=f"{i:02x}",
                    fingerprint_sha256=f"{i:064x}",
                    subject="CN=A",
                    not_before=now - timedelta(days=600),
                    not_after=now + timedelta(days=days),
                    status=status,
                    generation_id=1,
                    user_id=user.id,
                    key_type="rsa2048",
                    p12_profile="modern",
                    issued_at=now,
                    issued_by="ops:test",
                    cert_pem="-",
                )
            )
        # active, idle for 20 min (no with 15 min idle timeout), ended (no), past absolute (no)
        sessions_rows = [
            (timedelta(0), None, timedelta(hours=1)),
            (timedelta(minutes=20), None, timedelta(hours=1)),
            (timedelta(0), now, timedelta(hours=1)),
            (timedelta(0), None, timedelta(seconds=-1)),
        ]
        for i, (idle, ended, absolute) in enumerate(sessions_rows):
            s.add(
                WebSession(
                    id=f"{i:064x}",
                    user_id=user.id,
                    level=Level.STRONG,
                    created_at=now - idle,
                    last_seen_at=now - idle,
                    absolute_expires_at=now + absolute,
                    csrf_token="x",
                    ended_at=ended,
                )
            )


def test_store_gauges(sessions: sessionmaker[Session], clock: FakeClock) -> None:
    _seed(sessions, clock)
    ticks = iter([100.0, 105.0, 200.0])
    metrics = GatewayMetrics(min_refresh_interval=15, monotonic=lambda: next(ticks))
    assert metrics.refresh_from_store(sessions, now=clock(), idle_timeout=timedelta(minutes=15))
    samples = _samples(metrics)
    assert samples[("brokergate_certificates_expiring_60d", ())] == 2
    assert samples[("brokergate_active_sessions", ())] == 1
    # within the throttle interval: no query
    assert not metrics.refresh_from_store(sessions, now=clock(), idle_timeout=None)
    assert _samples(metrics)[("brokergate_active_sessions", ())] == 1
    # later, without an idle timeout, the idle session counts too
    assert metrics.refresh_from_store(sessions, now=clock(), idle_timeout=None)
    assert _samples(metrics)[("brokergate_active_sessions", ())] == 2


async def test_metrics_listener_serves_and_refreshes() -> None:
    metrics = GatewayMetrics()
    metrics.record_handshake("none")
    calls: list[int] = []
    port = free_port()
    runner = await start_metrics_listener(
        metrics_app(metrics, refresh=lambda: calls.append(1)), host="127.0.0.1", port=port
    )
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
            async with client.get(f"http://127.0.0.1:{port}/other") as resp:
                assert resp.status == 404
    finally:
        await runner.cleanup()
    assert 'brokergate_handshakes_total{result="none"} 1.0' in text
    assert calls == [1]


async def test_metrics_listener_failing_refresh_is_a_failed_scrape() -> None:
    def broken() -> None:
        raise RuntimeError("database down")

    port = free_port()
    runner = await start_metrics_listener(
        metrics_app(GatewayMetrics(), refresh=broken), host="127.0.0.1", port=port
    )
    try:
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 500
    finally:
        await runner.cleanup()


def test_failure_pages_and_worker_restarts() -> None:
    metrics = GatewayMetrics()
    samples = _samples(metrics)
    for page in ("store_unavailable", "upstream_unavailable", "upstream_timeout", "error"):
        assert samples[("brokergate_failure_pages_total", (("page", page),))] == 0
    metrics.record_failure_page("store_unavailable")
    metrics.record_failure_page("store_unavailable")
    metrics.record_worker_restarts(3)
    samples = _samples(metrics)
    assert samples[("brokergate_failure_pages_total", (("page", "store_unavailable"),))] == 2
    assert samples[("brokergate_worker_restarts_total", ())] == 3
    with pytest.raises(UnknownMetricLabel, match="failure_pages"):
        metrics.record_failure_page("csrf")  # a broker's mistake, not ours: not counted here
    with pytest.raises(ValueError, match="negative"):
        metrics.record_worker_restarts(-1)
