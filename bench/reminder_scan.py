"""Reminder scan over 100,000 and 1,000,000 certificates, on SQLite and PostgreSQL.

For each backend and size: bulk-load the store (executemany on SQLite, COPY on
PostgreSQL), ANALYZE, then run ``renewal.queue_due_reminders`` twice, each time in a
fresh subprocess so that its peak RSS belongs to the scan alone:

* first scan: every certificate inside the 60-day window gets its reminder queued
  (``reminders_sent`` + ``mail_outbox`` rows, about 8 % of the store);
* re-run: the same window again; nothing new may be queued.

Printed per run: wall seconds, the scan process's own CPU seconds (on this shared,
often overloaded machine the wall time includes waiting for a CPU; on PostgreSQL the
server's work is in another process), store rows per second (wall), and the peak RSS
growth during the scan.
Flatness is the point: rows/s at 1M vs 100k (linear time) and RSS growth at 1M vs
100k (memory independent of the table size). Target: 1M under 10 s.

``BENCH_REMINDER_SIZES=100000,1000000`` changes the sizes,
``BENCH_REMINDER_BACKENDS=sqlite,postgresql`` the databases; PostgreSQL is skipped
with a note when 127.0.0.1:5432 is unreachable (override: BROKERGATE_TEST_PG_URL).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from renewal import DEFAULT_REMINDER_STAGES, queue_due_reminders
from store import make_engine, session_factory, upgrade

NOW = datetime(2026, 11, 25, 6, 0, tzinfo=UTC)
SIZES = [int(s) for s in os.environ.get("BENCH_REMINDER_SIZES", "100000,1000000").split(",")]
BACKENDS = os.environ.get("BENCH_REMINDER_BACKENDS", "sqlite,postgresql").split(",")
PG_ADMIN_URL = os.environ.get(
    "BROKERGATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# Spread of expiry dates: a month in the past to two years ahead (two-year certificates).
SPREAD_START, SPREAD_DAYS = NOW - timedelta(days=30), 760
USERS_PER_CERT = 0.8  # a fifth of the users hold two certificates (an old one, a renewal)
REVOKED_EVERY = 50  # 2 % revoked
DUMMY_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None)


def _rows(n: int) -> Iterator[tuple[Any, ...]]:
    users = max(1, int(n * USERS_PER_CERT))
    step = timedelta(days=SPREAD_DAYS) / n
    for i in range(n):
        not_after = SPREAD_START + step * ((i * 7919) % n)  # shuffled, evenly spread
        user = i % users + 1
        status = "revoked" if i % REVOKED_EVERY == 0 else "valid"
        yield (
            f"{i:032x}",
            f"{i:064x}",
            f"CN=bench {user}",
            _naive(not_after - timedelta(days=730)),
            _naive(not_after),
            status,
            1,
            user,
            "rsa2048",
            "compat",
            _naive(not_after - timedelta(days=730)),
            "bench",
            DUMMY_PEM,
        )


CERT_COLUMNS = (
    "serial, fingerprint_sha256, subject, not_before, not_after, status, generation_id, "
    "user_id, key_type, p12_profile, issued_at, issued_by, cert_pem"
)


def _broker_number(i: int) -> str:
    return f"{(i // 10**7) % 100:02d}/{(i // 10**4) % 1000:03d}/{i % 10**4:04d}"


def _ca_rows(conn: Any, placeholder: str) -> None:
    now = _naive(NOW)
    p = placeholder
    cur = conn.cursor()
    cur.execute(
        "INSERT INTO ca_roots (id, subject, cert_pem, key_pem_encrypted, status, not_before, "
        f"not_after, created_at) VALUES (1, 'CN=bench', {p}, 'x', 'active', {p}, {p}, {p})",
        (DUMMY_PEM, now, now + timedelta(days=7300), now),
    )
    cur.execute(
        "INSERT INTO ca_generations (id, root_id, subject, cert_pem, key_pem_encrypted, "
        "key_type, status, not_before, not_after, created_at, crl_number) VALUES "
        f"(1, 1, 'CN=bench G1', {p}, 'x', 'rsa2048', 'active', {p}, {p}, {p}, 0)",
        (DUMMY_PEM, now, now + timedelta(days=2190), now),
    )


def _load_sqlite(url: str, n: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    raw: Any = engine.raw_connection()
    conn = raw.driver_connection
    users = max(1, int(n * USERS_PER_CERT))
    now = _naive(NOW)
    conn.execute("BEGIN")
    _ca_rows(conn, "?")
    conn.executemany(
        "INSERT INTO organisations (id, broker_number, created_at) VALUES (?, ?, ?)",
        ((u, _broker_number(u), now) for u in range(1, users + 1)),
    )
    conn.executemany(
        "INSERT INTO offices (id, organisation_id, number, name, rights, active, created_at) "
        "VALUES (?, ?, ?, ?, '[]', 1, ?)",
        ((u, u, _broker_number(u), _broker_number(u), now) for u in range(1, users + 1)),
    )
    conn.executemany(
        "INSERT INTO users (id, organisation_id, office_id, email, name, locale, role, rights, "
        "status, created_at) VALUES (?, ?, ?, ?, ?, 'de', 'head', '[]', 'active', ?)",
        ((u, u, u, f"broker{u}@example.org", f"Broker {u}", now) for u in range(1, users + 1)),
    )
    conn.executemany(
        f"INSERT INTO certificates ({CERT_COLUMNS}) VALUES ({', '.join('?' * 13)})", _rows(n)
    )
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    raw.close()
    engine.dispose()


def _load_postgres(url: str, n: int) -> None:
    engine = make_engine(url)
    upgrade(engine)
    raw: Any = engine.raw_connection()
    conn = raw.driver_connection
    users = max(1, int(n * USERS_PER_CERT))
    now = _naive(NOW)
    with conn.transaction():
        _ca_rows(conn, "%s")
        with conn.cursor() as cur:
            with cur.copy("COPY organisations (id, broker_number, created_at) FROM STDIN") as cp:
                for u in range(1, users + 1):
                    cp.write_row((u, _broker_number(u), now))
            with cur.copy(
                "COPY offices (id, organisation_id, number, name, rights, active, created_at)"
                " FROM STDIN"
            ) as cp:
                for u in range(1, users + 1):
                    cp.write_row((u, u, _broker_number(u), _broker_number(u), "[]", True, now))
            with cur.copy(
                "COPY users (id, organisation_id, office_id, email, name, locale, role, rights,"
                " status, created_at) FROM STDIN"
            ) as cp:
                for u in range(1, users + 1):
                    cp.write_row(
                        (
                            u,
                            u,
                            u,
                            f"broker{u}@example.org",
                            f"Broker {u}",
                            "de",
                            "head",
                            "[]",
                            "active",
                            now,
                        )
                    )
            with cur.copy(f"COPY certificates ({CERT_COLUMNS}) FROM STDIN") as cp:
                for row in _rows(n):
                    cp.write_row(row)
            for table in ("organisations", "offices", "users", "ca_roots"):
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
    conn.execute("ANALYZE")
    conn.commit()  # psycopg opened a transaction for ANALYZE: its statistics need the commit
    raw.close()
    engine.dispose()


def _scan_in_subprocess(url: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.reminder_scan", "--scan", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RssSampler(threading.Thread):
    """Samples the resident set every 5 ms: ru_maxrss cannot be reset to a baseline."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _rss_bytes()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, _rss_bytes())


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _scan(url: str) -> None:
    """Child process: one scan, timed, with the growth of its resident memory."""
    engine = make_engine(url)
    sessions = session_factory(engine)
    # Warm up (connect, import the dialect, compile the queries) before the baseline: a scan
    # ten years back finds nothing due and changes nothing.
    queue_due_reminders(sessions, now=NOW - timedelta(days=3650), stages=(1,))
    baseline = _rss_bytes()
    sampler = _RssSampler()
    sampler.start()
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    report = queue_due_reminders(sessions, now=NOW, stages=DEFAULT_REMINDER_STAGES)
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_before
    sampler.done.set()
    sampler.join()
    engine.dispose()
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "scanned": report.scanned,
        "queued": report.queued,
        "rss_growth_mb": max(0, sampler.peak - baseline) / 2**20,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result))


def _postgres_reachable() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return str(exc).splitlines()[0]


def _postgres_database() -> tuple[str, str]:
    name = f"bg_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _drop_postgres(name: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _run(backend: str, n: int, url: str) -> dict[str, Any]:
    started = time.perf_counter()
    (_load_sqlite if backend == "sqlite" else _load_postgres)(url, n)
    load = time.perf_counter() - started
    first = _scan_in_subprocess(url)
    again = _scan_in_subprocess(url)
    assert again["queued"] == 0, "a re-run queued reminders twice"
    return {"backend": backend, "n": n, "load": load, "first": first, "again": again}


def _print(r: dict[str, Any]) -> None:
    f, a, n = r["first"], r["again"], r["n"]
    print(
        f"{r['backend']:10} {n:>9,}  load {r['load']:6.1f} s | first scan {f['seconds']:6.2f} s "
        f"(our CPU {f.get('cpu_seconds', 0):5.2f} s) "
        f"({n / f['seconds']:>9,.0f} rows/s, {f['scanned']:>7,} in window, {f['queued']:>7,} "
        f"queued, RSS +{f['rss_growth_mb']:5.1f} MB) | re-run {a['seconds']:6.2f} s "
        f"({n / a['seconds']:>9,.0f} rows/s, RSS +{a['rss_growth_mb']:5.1f} MB, queued "
        f"{a['queued']})",
        flush=True,
    )


def main() -> None:
    results: list[dict[str, Any]] = []
    pg_problem = _postgres_reachable()
    with tempfile.TemporaryDirectory(prefix="bg-bench-reminders-") as tmp:
        for n in SIZES:
            if "sqlite" in BACKENDS:
                results.append(_run("sqlite", n, f"sqlite:///{Path(tmp) / f'store-{n}.db'}"))
                _print(results[-1])
            if pg_problem or "postgresql" not in BACKENDS:
                continue
            name, url = _postgres_database()
            try:
                results.append(_run("postgresql", n, url))
                _print(results[-1])
            finally:
                _drop_postgres(name)
    if pg_problem:
        print(f"PostgreSQL skipped: not reachable ({pg_problem})")
    print("\nflatness (largest vs smallest size, same backend; 1.0 = perfectly flat):")
    for backend in ("sqlite", "postgresql"):
        runs = sorted((r for r in results if r["backend"] == backend), key=lambda r: r["n"])
        if len(runs) < 2:
            continue
        small, big = runs[0], runs[-1]
        rate = (big["n"] / big["first"]["seconds"]) / (small["n"] / small["first"]["seconds"])
        mem_small = max(small["first"]["rss_growth_mb"], 0.1)
        print(
            f"  {backend:10} rows/s {big['n']:,} / {small['n']:,} = {rate:.2f}   "
            f"RSS growth {big['first']['rss_growth_mb']:.1f} MB / {mem_small:.1f} MB   "
            f"1M first scan {'under' if big['first']['seconds'] < 10 else 'OVER'} the 10 s target"
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--scan":
        _scan(sys.argv[2])
    else:
        main()
