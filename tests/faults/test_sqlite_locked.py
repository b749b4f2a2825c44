"""SQLite (the default store) locked by a concurrent writer under the mix (issue 18).

Another process holds ``BEGIN EXCLUSIVE`` for longer than the store's busy timeout
(``PRAGMA busy_timeout``, store/_engine.py). In WAL mode readers go on; what must write
(a new session, a login) waits, within that bound, then gets the "temporarily
unavailable" page. Nothing is granted beyond its level, nothing answers 500, the file
passes ``PRAGMA integrity_check`` afterwards, and everything is normal once the lock is
released.

It runs standalone and behind nginx in forward-auth mode (``sqlite_system[nginx]``: the
shipped deploy/nginx/forward-auth.conf in front of the replica). There a waiting decision
is nginx's ``auth_request`` subrequest; nginx waits up to its ``proxy_read_timeout`` (20 s,
above the busy timeout), so the broker gets brokergate's page, not nginx's own 500/504.
A refusal is asked again for its page (``@brokergate_page``); after a decision that could
not reach the store that fetch answers the 503 page at once (``X-Brokergate-Failure``), so
a broker waits at most the busy timeout there too, not twice.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults._figures import Figures
from tests.faults._load import (
    Mix,
    by_outcome,
    granted_beyond_level,
    healthy,
    probe,
    server_error,
    until,
)
from tests.faults._system import FRONTS, Front, System, running_system
from tests.gateway_proxy._nginx import NGINX

pytestmark = pytest.mark.slow

BUSY_TIMEOUT = 15.0  # store/_engine.py: PRAGMA busy_timeout=15000
HOLD = BUSY_TIMEOUT + 5  # the writer holds its lock past the busy timeout
SLACK = 3.0  # a loaded 2-core machine
LOGIN_KINDS = ("password", "tan")
LOGIN_STEPS = 5.0  # a login's other requests and the TAN mail, when nothing waits
RECOVERY_BOUND = 5.0  # normal again within 5 s of the release, as after a database outage

LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
db.execute("CREATE TABLE IF NOT EXISTS fault_lock (x INTEGER)")
db.execute("INSERT INTO fault_lock VALUES (1)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
db.execute("ROLLBACK")
print("released", flush=True)
"""


@pytest.fixture(scope="module", params=FRONTS)
def sqlite_system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    front: Front = request.param
    if front == "nginx" and not Path(NGINX).exists():
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed: run `make system-deps`")
        pytest.skip("nginx is not installed: run `make system-deps`")
    root = tmp_path_factory.mktemp(f"faults-sqlite-{front}")
    with running_system(root, backend="sqlite", front=front) as system:
        system.start_gateway("a")
        system.start_renewal()
        yield system


async def test_sqlite_locked_by_another_writer(sqlite_system: System, figures: Figures) -> None:
    system = sqlite_system
    replicas = list(system.replicas.values())
    database = system.root / "brokergate.db"

    mix = Mix(system=system, replicas=replicas)
    stop = asyncio.Event()
    load = asyncio.create_task(mix.run(stop))
    locker = None
    try:
        await asyncio.sleep(3)
        locker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCKER, str(database), str(HOLD), stdout=subprocess.PIPE
        )
        assert locker.stdout is not None
        assert (await locker.stdout.readline()).strip() == b"locked"
        locked = time.monotonic()
        # a new login while the lock is held: waits at most the busy timeout, then the page
        login = Mix(system=system, replicas=replicas, kinds=("password",))
        login_task = asyncio.create_task(_one_login(login))
        assert (await locker.stdout.readline()).strip() == b"released"
        released = time.monotonic()
        await login_task
        seconds = await until(
            lambda: probe(system, replicas[0], system.cert_brokers[0], "/vertrag/akte", "en"),
            lambda outcome: outcome == "ok",
            within=10,
            started=released,
        )
        await asyncio.sleep(8)  # the mix runs on after the release
    finally:
        stop.set()
        await asyncio.wait_for(load, 60)
        if locker is not None:
            if locker.returncode is None:
                locker.kill()
            await locker.wait()

    during = [s for s in mix.samples if locked <= s.at < released]
    outside = [
        s
        for s in mix.samples
        if (s.at + s.latency < locked or s.at >= released + RECOVERY_BOUND) and not healthy(s)
    ]
    integrity = _integrity(database)
    (sample,) = login.samples
    figures.record(
        "sqlite_locked",
        front=system.front,
        compared={
            "login_during_lock_seconds": round(sample.latency, 2),
            "recovery_seconds": round(seconds, 2),
        },
        busy_timeout_seconds=BUSY_TIMEOUT,
        lock_held_seconds=round(released - locked, 1),
        answers=len(mix.samples),
        granted_beyond_level=granted_beyond_level([*mix.samples, *login.samples]),
        server_errors=sum(1 for s in [*mix.samples, *login.samples] if server_error(s)),
        errors_outside_fault_window=len(outside),
        answers_while_locked=by_outcome(during),
        slowest_while_locked_seconds={
            kind: round(max(s.latency for s in during if s.kind == kind), 2)
            for kind in sorted({s.kind for s in during})
        },
        slowest_wait_beyond_busy_timeout_seconds=round(
            max((s.latency for s in during), default=0) - BUSY_TIMEOUT, 2
        ),
        login_during_lock={"outcome": sample.outcome, "seconds": round(sample.latency, 2)},
        recovery_seconds=round(seconds, 2),
        recovery_bound_seconds=RECOVERY_BOUND,
        integrity_check=integrity,
        exited=system.exited(),
    )

    assert granted_beyond_level([*mix.samples, *login.samples]) == 0, mix.violations()[:5]
    assert not [s for s in mix.samples if server_error(s) or s.outcome.startswith("error:")], (
        mix.outcomes()
    )
    # the login that had to write waited, within the bound, and got the clear page
    assert sample.outcome == "page:store_unavailable", sample
    assert BUSY_TIMEOUT - 1 < sample.latency < BUSY_TIMEOUT + SLACK, sample
    # nobody waited longer than the bound: a single request at most the busy timeout; a
    # login (several requests, the TAN mail) waits on one write at most, then goes on.
    # Behind nginx too: a refusal is asked twice there (auth_request, then its page), but
    # the page fetch after a decision that found the store unavailable does not wait again
    # (X-Brokergate-Failure; before that, answers took up to 18.8 s here).
    for sample in mix.samples:
        bound = BUSY_TIMEOUT + SLACK + (LOGIN_STEPS if sample.kind in LOGIN_KINDS else 0)
        assert sample.latency < bound, sample
    assert seconds < RECOVERY_BOUND
    # errors only while the lock was held (and the bound after it)
    assert outside == [], Counter((s.kind, s.outcome) for s in outside)
    assert integrity == "ok"
    assert system.exited() == []


async def _one_login(mix: Mix) -> None:
    stop = asyncio.Event()
    stop.set()  # one iteration: the loop checks stop after its first round
    await mix.run(stop)


def _integrity(database: Path) -> str:
    with sqlite3.connect(database) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
