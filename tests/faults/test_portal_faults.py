"""The portal down, then hanging, under the mix (issue 18).

Down (its process killed, the port refuses): brokers get the 502 page at once. Hanging
(connections accepted, never answered): the 504 page after ``upstream_read_timeout``,
not later. Behind nginx (forward-auth) nginx proxies the portal with the same timeouts and
asks the gateway for the same pages; the pool checked is then nginx's.

Either way the gateway's own pages (login forms) keep working, nothing is
granted beyond its level, and the upstream pool leaks nothing: once the hang is over no
connection to the upstream stays open, memory and file descriptors are back where they
were.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.faults._figures import Figures
from tests.faults._load import (
    Mix,
    Sample,
    by_outcome,
    granted_beyond_level,
    healthy,
    probe,
    run_for,
    server_error,
    until,
)
from tests.faults._system import (
    UPSTREAM_CONNECT_TIMEOUT,
    UPSTREAM_READ_TIMEOUT,
    System,
)

pytestmark = pytest.mark.slow

UPSTREAM_KINDS = ("sso", "handshake", "password", "websocket")
SLACK = 1.5  # seconds a loaded 2-core machine may add to a bound (TLS, scheduling)


def _figures(system: System) -> dict[str, tuple[int, int, Counter[str]]]:
    return {
        r.name: (system.rss(r), system.fds(r), system.upstream_sockets(r))
        for r in system.replicas.values()
    }


async def test_portal_down_then_hanging(pg_system: System, figures: Figures) -> None:
    system = pg_system
    replicas = list(system.replicas.values())
    kinds = (*UPSTREAM_KINDS, "revoked", "anonymous")

    def pages(page: str) -> float:
        return sum(system.metric(r, "brokergate_failure_pages_total", page=page) for r in replicas)

    counted_before = {p: pages(p) for p in ("upstream_unavailable", "upstream_timeout")}
    warm = Mix(system=system, replicas=replicas, kinds=kinds)
    await run_for(warm, 4)  # the pools hold their keep-alive connections
    assert all(healthy(s) for s in warm.samples), warm.outcomes()
    before = _figures(system)

    # --- down: connection refused → the 502 page, at once
    await asyncio.to_thread(system.stop_upstream)
    down = Mix(system=system, replicas=replicas, kinds=kinds)
    await run_for(down, 4)
    # --- hanging: accepted, never answered → the 504 page after the read timeout
    await asyncio.to_thread(system.hang_upstream)
    hanging = Mix(system=system, replicas=replicas, kinds=kinds)
    await run_for(hanging, UPSTREAM_READ_TIMEOUT * 2 + 1)
    await asyncio.sleep(UPSTREAM_READ_TIMEOUT + SLACK)  # the last timeouts run out
    during_hang = _figures(system)
    # --- back
    await asyncio.to_thread(system.start_upstream)
    back = time.monotonic()
    seconds = await until(
        lambda: probe(system, replicas[0], system.cert_brokers[0], "/vertrag/akte", "de"),
        lambda outcome: outcome == "ok",
        within=10,
        started=back,
    )
    after_mix = Mix(system=system, replicas=replicas, kinds=kinds)
    await run_for(after_mix, 4)
    await asyncio.sleep(1)
    after = _figures(system)

    def upstream_bound(mix: Mix) -> list[Sample]:
        return [s for s in mix.samples if s.kind in UPSTREAM_KINDS]

    settled = [s for s in upstream_bound(hanging) if s.at > hanging.samples[0].at + SLACK]
    mixes = (warm, down, hanging, after_mix)
    everything = [s for mix in mixes for s in mix.samples]
    counted = {p: pages(p) - before_count for p, before_count in counted_before.items()}
    slowest_502 = max(s.latency for s in upstream_bound(down))
    slowest_504 = max((s.latency for s in settled), default=0.0)
    figures.record(
        "portal_down_then_hanging",
        front=system.front,
        compared={
            "recovery_seconds": round(seconds, 2),
            "slowest_502_seconds": round(slowest_502, 2),
            "slowest_504_seconds": round(slowest_504, 2),
        },
        upstream_connect_timeout_seconds=UPSTREAM_CONNECT_TIMEOUT,
        upstream_read_timeout_seconds=UPSTREAM_READ_TIMEOUT,
        answers=len(everything),
        granted_beyond_level=granted_beyond_level(everything),
        server_errors=sum(1 for s in everything if server_error(s)),
        errors_outside_fault_window=sum(
            1 for s in [*warm.samples, *after_mix.samples] if not healthy(s)
        ),
        answers_portal_down=by_outcome(down.samples),
        answers_portal_hanging=by_outcome(hanging.samples),
        slowest_502_seconds=round(slowest_502, 2),
        fastest_504_seconds=round(min(s.latency for s in settled), 2) if settled else None,
        slowest_504_seconds=round(slowest_504, 2) if settled else None,
        recovery_seconds=round(seconds, 2),
        failure_pages_counted={**counted, "error": pages("error")},
        per_replica={
            name: {
                "rss_mib_before_after": [
                    round(before[name][0] / 2**20, 1),
                    round(after[name][0] / 2**20, 1),
                ],
                "fds_before_after": [before[name][1], after[name][1]],
                "upstream_sockets_before_hang_after": [
                    dict(before[name][2]),
                    dict(during_hang[name][2]),
                    dict(after[name][2]),
                ],
            }
            for name in before
        },
        exited=system.exited(),
    )

    assert granted_beyond_level(everything) == 0, [s for s in everything if s.violation][:5]
    bad = [s for s in everything if server_error(s)]
    assert bad == [], Counter((s.kind, s.outcome) for s in bad)

    # down: the 502 page (the WebSocket upgrade gets a 502 answer), within the connect timeout
    for sample in upstream_bound(down):
        assert sample.outcome in {"page:upstream_unavailable", "ws-handshake:502"}, sample
        assert sample.latency < UPSTREAM_CONNECT_TIMEOUT + SLACK, sample
    # hanging: the 504 page after the read timeout, not much later
    assert settled
    for sample in settled:
        assert sample.outcome in {"page:upstream_timeout", "ws-handshake:504"}, sample
        assert UPSTREAM_READ_TIMEOUT - 0.5 < sample.latency < UPSTREAM_READ_TIMEOUT + SLACK, sample
    # the gateway's own answers go on: the revoked certificate and anonymous clients get
    # their pages without the upstream
    for mix in (down, hanging):
        for sample in mix.samples:
            if sample.kind in ("revoked", "anonymous"):
                assert healthy(sample), sample
    assert all(healthy(s) for s in after_mix.samples), after_mix.outcomes()
    assert seconds < 5
    for name in before:
        rss0, fds0, _ = before[name]
        rss1, fds1, socks1 = after[name]
        # every timed-out connection was closed, none is held open for the hanging portal
        assert during_hang[name][2].get("ESTABLISHED", 0) == 0, during_hang[name]
        assert socks1.get("CLOSE_WAIT", 0) == 0, socks1
        assert socks1.get("ESTABLISHED", 0) <= max(4, 2 * before[name][2].get("ESTABLISHED", 0))
        assert fds1 <= fds0 + 4, (fds0, fds1)
        assert rss1 < rss0 * 1.10, (rss0, rss1)
    for page, count in counted.items():
        assert count > 0, page  # what operators alert on
    assert pages("error") == 0
    assert system.exited() == []
