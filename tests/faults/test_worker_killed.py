"""A gateway worker killed with SIGKILL under load (issue 18).

Replica ``a`` serves with ``--workers 2`` (SO_REUSEPORT); the whole mix runs on both
replicas, the renewal process delivering the TAN mails; standalone and behind nginx
(forward-auth: nginx's connections to the killed worker break, and it asks again).

One worker of ``a`` is killed:
the supervisor starts a new one in its place (logged, counted in
``brokergate_worker_restarts_total``), the other worker serves on meanwhile, and the port
never refuses a connection. Only requests that were on the killed worker's connections at
that moment may fail.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections import Counter

import pytest

from tests.faults._figures import Figures
from tests.faults._load import Mix, by_outcome, granted_beyond_level, healthy, server_error
from tests.faults._system import READY, System
from tests.polling import async_wait_for

pytestmark = pytest.mark.slow

RESTART_BOUND = 15.0  # seconds until the new worker serves (a loaded 2-core machine)
FAILURE_WINDOW = 1.0  # requests started this long after the kill must all succeed
# A restart at least this long has answers of the surviving worker in it to see: the mix
# sends a request to each replica every 0.2 s (sso, 0.1 s, alternating between two).
OBSERVABLE_RESTART = 0.5


async def _refusals(port: int, stop: asyncio.Event) -> list[float]:
    """Connect to the port every 20 ms until ``stop``; when a connection was refused."""
    refused: list[float] = []
    while not stop.is_set():
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            writer.close()
            await writer.wait_closed()
        except (ConnectionRefusedError, TimeoutError):
            refused.append(time.monotonic())
        except OSError:
            pass  # a reset by the dying worker is not a refusal of the port
        await asyncio.sleep(0.02)
    return refused


async def test_worker_killed_under_load(pg_system: System, figures: Figures) -> None:
    system = pg_system
    replica = system.replicas["a"]
    assert replica.workers == 2
    workers = replica.worker_pids()
    assert len(workers) == 2, workers
    restarts_before = system.metric(replica, "brokergate_worker_restarts_total")
    ready_before = replica.output.count(READY)

    mix = Mix(system=system, replicas=list(system.replicas.values()))
    stop = asyncio.Event()
    load = asyncio.create_task(mix.run(stop))
    probing = asyncio.create_task(_refusals(replica.port, stop))
    try:
        await asyncio.sleep(3)
        victim = workers[0]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        await async_wait_for(
            lambda: replica.output.count(READY) > ready_before or not replica.alive,
            timeout=RESTART_BOUND,
            message="the new worker's start line",
        )
        restarted = time.monotonic() - killed
        await asyncio.sleep(4)  # the mix runs on with the new worker
    finally:
        stop.set()
        await asyncio.wait_for(load, 60)
        refused = await probing

    after = replica.worker_pids()
    failed = [s for s in mix.samples if not healthy(s)]
    offsets = [round(s.at - killed, 2) for s in failed]
    late = [s for s in failed if s.at > killed + FAILURE_WINDOW or s.at + s.latency < killed]
    meanwhile = [
        s
        for s in mix.samples
        if s.replica == replica.name
        and killed < s.at + s.latency < killed + restarted
        and healthy(s)
    ]
    figures.record(
        "worker_killed",
        front=system.front,
        compared={"restart_seconds": round(restarted, 2)},
        workers_before_after=[workers, after],
        restart_seconds=round(restarted, 2),
        restart_bound_seconds=RESTART_BOUND,
        answers=len(mix.samples),
        answers_by_outcome=by_outcome(mix.samples),
        granted_beyond_level=granted_beyond_level(mix.samples),
        server_errors=sum(1 for s in mix.samples if server_error(s)),
        failed=by_outcome(failed),
        failed_started_seconds_after_kill=[min(offsets, default=0), max(offsets, default=0)],
        errors_outside_fault_window=len(late),
        port_refused_connections=len(refused),
        answered_by_the_other_worker_meanwhile=len(meanwhile),
        exited=system.exited(),
    )

    assert replica.alive and system.exited() == []
    assert replica.output.count(READY) == ready_before + 1, replica.output[-2000:]
    assert len(after) == 2 and victim not in after and workers[1] in after
    assert restarted < RESTART_BOUND
    assert refused == [], f"the port refused {len(refused)} connection(s)"
    assert granted_beyond_level(mix.samples) == 0, mix.violations()[:5]
    assert not [s for s in mix.samples if server_error(s)], mix.outcomes()
    assert late == [], late
    # the surviving worker served while the new one started: answers of this replica that
    # came back complete between the kill and the new worker's start line. On a quiet
    # machine the new worker can be up within 0.07 s, sooner than the mix's next request to
    # this replica; then the window holds no answer to see, and what shows that the survivor
    # served on is above (its pid unchanged, no refused connection, no failure after the
    # window).
    if restarted >= OBSERVABLE_RESTART:
        assert meanwhile, Counter(
            (s.kind, s.outcome) for s in mix.samples if s.replica == replica.name
        )
    assert system.metric(replica, "brokergate_worker_restarts_total") == restarts_before + 1
    assert "restarting" in replica.output
    # the socket check of the others is one more proof that nothing else changed
    with socket.create_connection(("127.0.0.1", replica.port), timeout=2):
        pass
