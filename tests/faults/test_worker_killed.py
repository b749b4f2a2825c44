"""A gateway worker killed with SIGKILL under load (issue 18).

Replica ``a`` serves with ``--workers 2`` (SO_REUSEPORT). One worker is killed: the
supervisor starts a new one in its place (logged, counted in
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

from tests.faults._load import Mix, healthy
from tests.faults._system import READY, System

pytestmark = pytest.mark.slow

RESTART_BOUND = 15.0  # seconds until the new worker serves (a loaded 2-core machine)
FAILURE_WINDOW = 1.0  # requests started this long after the kill must all succeed


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


async def test_worker_killed_under_load(pg_system: System) -> None:
    system = pg_system
    replica = system.replicas["a"]
    assert replica.workers == 2
    workers = replica.worker_pids()
    assert len(workers) == 2, workers
    restarts_before = system.metric(replica, "brokergate_worker_restarts_total")
    ready_before = replica.output.count(READY)

    mix = Mix(
        system=system, replicas=[replica], kinds=("sso", "handshake", "websocket", "password")
    )
    stop = asyncio.Event()
    load = asyncio.create_task(mix.run(stop))
    probing = asyncio.create_task(_refusals(replica.port, stop))
    try:
        await asyncio.sleep(3)
        victim = workers[0]
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        while replica.output.count(READY) <= ready_before:  # the new worker's start line
            if time.monotonic() > killed + RESTART_BOUND or not replica.alive:
                break
            await asyncio.sleep(0.05)
        restarted = time.monotonic() - killed
        await asyncio.sleep(4)  # the mix runs on with the new worker
    finally:
        stop.set()
        await asyncio.wait_for(load, 60)
        refused = await probing

    after = replica.worker_pids()
    print(f"worker {victim} killed; a new one ready after {restarted:.2f} s; workers {after}")
    print("answers:", dict(mix.outcomes()))
    failed = [s for s in mix.samples if not healthy(s)]
    offsets = [round(s.at - killed, 2) for s in failed]
    print(
        "failed:",
        dict(Counter((s.kind, s.outcome) for s in failed)),
        f"started {min(offsets, default=0)} … {max(offsets, default=0)} s after the kill",
    )

    assert replica.alive and system.exited() == []
    assert replica.output.count(READY) == ready_before + 1, replica.output[-2000:]
    assert len(after) == 2 and victim not in after and workers[1] in after
    assert restarted < RESTART_BOUND
    assert refused == [], f"the port refused {len(refused)} connection(s)"
    assert mix.violations() == []
    late = [s for s in failed if s.at > killed + FAILURE_WINDOW or s.at + s.latency < killed]
    assert late == [], late
    # requests served by the surviving worker while the other one was gone
    gap = [s for s in mix.samples if killed + FAILURE_WINDOW < s.at < killed + restarted]
    assert all(healthy(s) for s in gap)
    assert system.metric(replica, "brokergate_worker_restarts_total") == restarts_before + 1
    assert "restarting" in replica.output
    # the socket check of the others is one more proof that nothing else changed
    with socket.create_connection(("127.0.0.1", replica.port), timeout=2):
        pass
