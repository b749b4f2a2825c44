"""The portal down, then hanging, under the mix (issue 18).

Down (its process killed, the port refuses): brokers get the 502 page at once. Hanging
(connections accepted, never answered): the 504 page after ``upstream_read_timeout``,
not later. Either way the gateway's own pages (login forms) keep working, nothing is
granted beyond its level, and the upstream pool leaks nothing: once the hang is over no
connection to the upstream stays open, memory and file descriptors are back where they
were.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.faults._load import Mix, healthy, probe, run_for, until
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


async def test_portal_down_then_hanging(pg_system: System) -> None:
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

    print("portal down:", dict(down.outcomes()))
    print("portal hanging:", dict(hanging.outcomes()))
    print("after its return:", dict(after_mix.outcomes()), f"(first success {seconds:.2f} s)")
    for name in before:
        rss0, fds0, socks0 = before[name]
        rss1, fds1, socks1 = after[name]
        print(
            f"{name}: RSS {rss0 / 2**20:.1f} → {rss1 / 2**20:.1f} MiB, fds {fds0} → {fds1}, "
            f"upstream sockets {dict(socks0)} → hang {dict(during_hang[name][2])} → {dict(socks1)}"
        )

    for mix in (warm, down, hanging, after_mix):
        assert mix.violations() == [], mix.violations()[:5]
        assert not [s for s in mix.samples if s.outcome.startswith("status:5")], mix.outcomes()

    def upstream_bound(mix: Mix) -> list[object]:
        return [s for s in mix.samples if s.kind in UPSTREAM_KINDS]

    # down: the 502 page (the WebSocket upgrade gets a 502 answer), within the connect timeout
    for sample in upstream_bound(down):
        assert sample.outcome in {"page:upstream_unavailable", "ws-handshake:502"}, sample
        assert sample.latency < UPSTREAM_CONNECT_TIMEOUT + SLACK, sample
    # hanging: the 504 page after the read timeout, not much later
    settled = [s for s in upstream_bound(hanging) if s.at > hanging.samples[0].at + SLACK]
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
    for page, before_count in counted_before.items():
        assert pages(page) > before_count, page  # what operators alert on
    assert pages("error") == 0
    assert system.exited() == []
