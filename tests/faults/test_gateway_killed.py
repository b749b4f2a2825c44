"""A replica's whole gateway killed behind nginx, under the mix (issue 18, forward-auth).

Replica ``b`` (``brokergate gateway serve``, one worker) is killed with SIGKILL, so no
supervisor restarts it (a crash of the unit, an OOM kill of everything). Its nginx stays:
every broker asking it gets nginx's static page (deploy/nginx/brokergate-unavailable.html,
503) at once, never a bare 500 and never the portal without a decision. Replica ``a``
serves on untouched. When ``b`` is started again on its port, nginx uses it with the next
request. Standalone there is nothing to show: a dead gateway is a refused connection.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import pytest

from tests.faults._figures import Figures
from tests.faults._load import (
    Mix,
    by_outcome,
    granted_beyond_level,
    healthy,
    probe,
    run_for,
    server_error,
    until,
)
from tests.faults._system import System

pytestmark = pytest.mark.slow

DOWN = 4.0  # seconds the gateway stays dead under the mix
RECOVERY_BOUND = 5.0  # normal again within 5 s of the gateway being ready
SLACK = 1.5  # seconds a loaded 2-core machine may add (TLS, scheduling)
# What a client of the dead replica may get: nginx's static page (a WebSocket upgrade: its
# status); a login that had its form before the kill gets the page on its next step too.
WHILE_DOWN = {"page:gateway_unavailable", "ws-handshake:503"}


async def test_gateway_killed(pg_system: System, figures: Figures) -> None:
    system = pg_system
    if system.front != "nginx":
        pytest.skip("standalone: a dead gateway is a refused connection, nobody answers for it")
    victim, other = system.replicas["b"], system.replicas["a"]
    assert victim.workers == 1 and victim.front is not None
    broker = system.cert_brokers[0]

    mix = Mix(system=system, replicas=[victim, other])
    stop = asyncio.Event()
    load = asyncio.create_task(mix.run(stop))
    probes: list[tuple[str, str, float]] = []
    try:
        await asyncio.sleep(3)  # a baseline under the mix
        killed = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.proc.wait, 10)
        for path in ("/vertrag/akte", "/_gateway/login/password"):
            for language in ("de", "nl"):
                asked = time.monotonic()
                outcome, violation = await probe(system, victim, broker, path, language)
                assert violation is None, violation
                probes.append((path, outcome, time.monotonic() - asked))
        await asyncio.sleep(max(0.0, DOWN - (time.monotonic() - killed)))
        restarting = time.monotonic()
        replica = await asyncio.to_thread(system.restart_gateway, "b")
        ready = time.monotonic()
        on_the_way: Counter[str] = Counter()

        async def first_answers() -> tuple[str, str | None]:
            answer = await probe(system, replica, broker, "/vertrag/akte", "en")
            on_the_way[answer[0]] += 1
            return answer

        recovery = await until(
            first_answers,
            lambda outcome: outcome == "ok",
            within=RECOVERY_BOUND + 10,
            started=ready,
            what="the restarted gateway serving through nginx",
        )
        back = time.monotonic()
    finally:
        stop.set()
        await asyncio.wait_for(load, 60)
    after = Mix(system=system, replicas=[replica, other])
    await run_for(after, 3)

    everything = [*mix.samples, *after.samples]
    of_victim = [s for s in mix.samples if s.replica == victim.name]
    window = [s for s in of_victim if killed <= s.at + s.latency and s.at < back]
    outside = [
        s for s in of_victim if not healthy(s) and (s.at + s.latency < killed or s.at >= back)
    ]
    figures.record(
        "gateway_killed",
        front=system.front,
        down_seconds=round(restarting - killed, 2),
        restart_until_ready_seconds=round(ready - restarting, 2),
        recovery_seconds=round(recovery, 2),
        recovery_bound_seconds=RECOVERY_BOUND,
        answers_after_ready=dict(on_the_way),
        probes_while_down=[[p, o, round(s, 3)] for p, o, s in probes],
        answers=len(everything),
        answers_of_the_dead_replica_meanwhile=by_outcome(window),
        answers_of_the_other_replica=by_outcome(s for s in mix.samples if s.replica == other.name),
        granted_beyond_level=granted_beyond_level(everything),
        server_errors=sum(1 for s in everything if server_error(s)),
        errors_outside_fault_window=len(outside),
        exited=system.exited(),
    )

    assert granted_beyond_level(everything) == 0, [s for s in everything if s.violation][:5]
    bad = [s for s in everything if server_error(s)]
    assert bad == [], Counter((s.kind, s.outcome) for s in bad)
    # brokers of the dead replica: the static page, at once (the port refuses)
    for path, outcome, seconds in probes:
        assert outcome == "page:gateway_unavailable", (path, outcome)
        assert seconds < SLACK, (path, seconds)
    failed = Counter(s.outcome for s in window if not healthy(s))
    assert failed and set(failed) <= WHILE_DOWN, failed
    # the other replica is untouched, the dead one normal again within the bound
    assert all(healthy(s) for s in mix.samples if s.replica == other.name), mix.outcomes()
    assert outside == [], Counter((s.kind, s.outcome) for s in outside)
    assert recovery < RECOVERY_BOUND, recovery
    assert all(healthy(s) for s in after.samples), after.outcomes()
    assert system.exited() == []
