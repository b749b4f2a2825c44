"""Soak: the fault suite's traffic mix at a fixed rate for 10 minutes, memory and latency over time.

The system is the fault suite's (``tests/faults/_system.py``): two gateway replicas
(``a`` with two workers, ``b`` with one) and the renewal process on a PostgreSQL cluster
of its own (SQLite when Debian's server binaries are missing), the portal stand-in, an
SMTP sink. The mix (``tests/faults/_load.py``) runs certificate SSO on keep-alive
connections, new TLS handshakes, password and TAN logins, WebSockets, a revoked
certificate and anonymous clients, and checks every answer (no grant beyond the
session's level). Every ``SNAPSHOT_EVERY`` seconds the RSS and open file descriptors of
every gateway worker, of the renewal process and (behind nginx) of every nginx process
(master and workers) are read (psutil).

Two fronts, one after the other in one run (``BENCH_SOAK_FRONT``: ``both``, the default,
``standalone`` or ``nginx``): the gateway serving brokers itself, and each replica in
forward-auth mode behind a real nginx of its own running the shipped
deploy/nginx/forward-auth.conf (``running_system(front="nginx")``). Each front gets the
whole duration and its own checks; with both, a last table puts their figures side by
side (nginx / standalone).

Printed: a line per minute (requests, p50/p99 latency of single requests and of logins,
errors, RSS and fds at its end) and the checks of issue 18:

* RSS growth after warm-up < 5 % (gateway workers, summed; renewal on its own): the
  median of the last minute against the median of the first minute after warm-up,
* open file descriptors flat (the same medians, at most +4 per process),
* p99 of every later minute within 2x of the first minute's after warm-up (single requests
  and logins apart: a TAN login waits for the mail),
* 0 errors (nothing but the expected answers, no violation), since nothing is injected.

``BENCH_SOAK_SECONDS`` (default 600) sets the duration of each front, ``BENCH_SOAK_WARMUP_SECONDS``
(default 60, at most a fifth of the run) the warm-up, ``BENCH_SOAK_BUCKET_SECONDS``
(default 60) the reporting interval; ``BENCH_SOAK_RECORD=FILE`` keeps the raw samples and
readings as JSON (an object keyed by front). A failed check makes the benchmark exit 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.faults._load import Mix, Sample, healthy
from tests.faults._system import FRONTS, Front, System, postgres_bin, running_system

SNAPSHOT_EVERY = 5.0  # seconds between two RSS/fd readings
RSS_GROWTH_LIMIT = 0.05  # issue 18: < 5 % after warm-up
FD_SLACK = 4  # per process: a connection more or less in a pool is not a leak
P99_FACTOR = 2.0  # issue 18: p99 within 2x of its first minute
REQUEST_KINDS = ("sso", "handshake", "websocket", "revoked", "anonymous")
LOGIN_KINDS = ("password", "tan")


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    at: float
    rss: dict[str, int]  # process group ("gateway", "renewal", "nginx") → bytes
    fds: dict[str, int]  # process → open descriptors
    upstream_sockets: int


@dataclass(frozen=True, kw_only=True)
class Bucket:
    start: float  # seconds since the run began
    requests: int
    p50: float
    p99: float
    login_p50: float
    login_p99: float
    errors: int
    rss_mib: float  # every process group summed
    fds: int
    nginx_rss_mib: float = 0.0  # of that, the nginx processes (behind nginx)


@dataclass(kw_only=True)
class SoakReport:
    buckets: list[Bucket]
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(ok for ok, _ in self.checks.values())


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def analyse(
    samples: Sequence[Sample],
    snapshots: Sequence[Snapshot],
    *,
    started: float,
    warmup: float,
    bucket: float,
) -> SoakReport:
    """The per-bucket figures and the checks (a pure function of the recorded run)."""
    end = max((s.at for s in samples), default=started)
    buckets: list[Bucket] = []
    edge = started
    while edge <= end:
        inside = [s for s in samples if edge <= s.at < edge + bucket]
        requests = [s.latency for s in inside if s.kind in REQUEST_KINDS]
        logins = [s.latency for s in inside if s.kind in LOGIN_KINDS]
        shots = [x for x in snapshots if x.at < edge + bucket] or list(snapshots[:1])
        last = shots[-1] if shots else None
        buckets.append(
            Bucket(
                start=edge - started,
                requests=len(inside),
                p50=_pct(requests, 50),
                p99=_pct(requests, 99),
                login_p50=_pct(logins, 50),
                login_p99=_pct(logins, 99),
                errors=sum(1 for s in inside if not healthy(s)),
                rss_mib=(sum(last.rss.values()) / 2**20) if last else 0.0,
                fds=sum(last.fds.values()) if last else 0,
                nginx_rss_mib=(last.rss.get("nginx", 0) / 2**20) if last else 0.0,
            )
        )
        edge += bucket
    report = SoakReport(buckets=buckets)
    # Memory and descriptors: the median of the first bucket after the warm-up against the
    # median of the last one. A single reading would catch a moment, not a trend: a
    # password hash (argon2, 64 MiB) or a burst of new connections in flight at that instant.
    first = [x for x in snapshots if started + warmup <= x.at < started + warmup + bucket]
    last = [x for x in snapshots if x.at >= end - bucket]
    if first and last and last[0].at > first[-1].at:
        for group in first[0].rss:
            before = statistics.median(x.rss[group] for x in first)
            after = statistics.median(x.rss.get(group, 0) for x in last)
            growth = after / before - 1
            report.checks[f"RSS growth after warm-up ({group})"] = (
                growth < RSS_GROWTH_LIMIT,
                f"median {before / 2**20:.1f} → {after / 2**20:.1f} MiB "
                f"({growth:+.1%}, limit +{RSS_GROWTH_LIMIT:.0%})",
            )
        rises = sorted(
            (
                statistics.median(x.fds.get(p, 0) for x in last)
                - statistics.median(x.fds[p] for x in first),
                p,
            )
            for p in first[0].fds
        )
        worst_rise, worst = rises[-1]
        peak = max(sum(x.fds.values()) for x in snapshots if x.at >= started + warmup)
        report.checks["open file descriptors flat"] = (
            worst_rise <= FD_SLACK,
            f"largest median rise {worst_rise:+.0f} ({worst}, at most +{FD_SLACK}); "
            f"total {sum(first[0].fds.values())} → {sum(last[-1].fds.values())}, peak {peak}",
        )
    else:
        report.checks["RSS/fd readings after warm-up"] = (False, "too few; run longer")
    # Complete buckets after the warm-up; the first of them is the reference ("its first
    # minute": the one before it includes start-up, imports and cold caches).
    full = [
        b for b in buckets if b.start >= warmup - 1e-9 and b.start + bucket <= end - started + 1e-9
    ]
    if full:
        base = full[0]
        for label, pick in (("p99", "p99"), ("login p99", "login_p99")):
            first_p99 = getattr(base, pick)
            worst = max(full, key=lambda b, p=pick: getattr(b, p))  # type: ignore[misc]
            report.checks[f"{label} within {P99_FACTOR:g}x of the first minute after warm-up"] = (
                getattr(worst, pick) <= P99_FACTOR * first_p99,
                f"first ({base.start:.0f} s) {first_p99 * 1000:.0f} ms, worst ({worst.start:.0f} s)"
                f" {getattr(worst, pick) * 1000:.0f} ms",
            )
    else:
        report.checks["p99 after warm-up"] = (False, "no complete bucket after warm-up; run longer")
    errors = [s for s in samples if not healthy(s)]
    violations = [s for s in samples if s.violation]
    report.checks["no errors, no grant beyond the level"] = (
        not errors and not violations,
        f"{len(errors)} error(s), {len(violations)} violation(s) in {len(samples)} answers"
        + (f"; first: {errors[0]}" if errors else ""),
    )
    return report


def _snapshot(system: System) -> Snapshot:
    rss: dict[str, int] = {"gateway": 0}
    fds: dict[str, int] = {}
    sockets = 0
    for replica in system.replicas.values():
        for pid in replica.worker_pids():
            process = psutil.Process(pid)
            rss["gateway"] += process.memory_info().rss
            fds[f"{replica.name}/{pid}"] = process.num_fds()
        sockets += system.upstream_sockets(replica).get("ESTABLISHED", 0)
        if replica.front is not None:  # nginx in front: its master and workers
            rss.setdefault("nginx", 0)
            master = psutil.Process(replica.front.proc.pid)
            for process in [master, *master.children()]:
                rss["nginx"] += process.memory_info().rss
                fds[f"{replica.front.name}/{process.pid}"] = process.num_fds()
    if system.renewal is not None:
        process = psutil.Process(system.renewal.proc.pid)
        rss["renewal"] = process.memory_info().rss
        fds[f"renewal/{process.pid}"] = process.num_fds()
    return Snapshot(at=time.monotonic(), rss=rss, fds=fds, upstream_sockets=sockets)


async def soak(system: System, seconds: float) -> tuple[Mix, list[Snapshot], float]:
    mix = Mix(system=system, replicas=list(system.replicas.values()))
    stop = asyncio.Event()
    started = time.monotonic()
    load = asyncio.create_task(mix.run(stop))
    snapshots: list[Snapshot] = []
    while time.monotonic() - started < seconds:
        snapshots.append(await asyncio.to_thread(_snapshot, system))
        elapsed = time.monotonic() - started
        if len(snapshots) % int(60 / SNAPSHOT_EVERY) == 1:
            done = len(mix.samples)
            bad = sum(1 for s in mix.samples if not healthy(s))
            print(f"  {elapsed:5.0f} s: {done} answers, {bad} errors", flush=True)
        await asyncio.sleep(min(SNAPSHOT_EVERY, max(0.0, seconds - elapsed)))
    snapshots.append(await asyncio.to_thread(_snapshot, system))
    stop.set()
    await asyncio.wait_for(load, 60)
    return mix, snapshots, started


def print_report(report: SoakReport, *, bucket: float) -> None:
    print(
        f"\n{'from':>6} {'answers':>8} {'p50 ms':>7} {'p99 ms':>7} {'login p50':>9} "
        f"{'login p99':>9} {'errors':>6} {'RSS MiB':>8} {'fds':>5}"
    )
    for b in report.buckets:
        print(
            f"{b.start:5.0f}s {b.requests:8d} {b.p50 * 1000:7.1f} {b.p99 * 1000:7.1f} "
            f"{b.login_p50 * 1000:9.0f} {b.login_p99 * 1000:9.0f} {b.errors:6d} "
            f"{b.rss_mib:8.1f} {b.fds:5d}"
        )
    print(
        f"(buckets of {bucket:g} s; RSS: gateway workers + renewal + nginx, of which nginx "
        f"{report.buckets[-1].nginx_rss_mib if report.buckets else 0:.1f} MiB at the end; "
        "fds: summed)\n"
    )
    for name, (ok, detail) in report.checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")


def fronts_to_run(value: str) -> tuple[Front, ...]:
    """``BENCH_SOAK_FRONT``: ``both`` (the default), ``standalone`` or ``nginx``."""
    if value == "both":
        return FRONTS
    for front in FRONTS:
        if value == front:
            return (front,)
    raise SystemExit(f"BENCH_SOAK_FRONT={value!r} is not a front: use both, standalone or nginx")


@dataclass(frozen=True, kw_only=True)
class FrontRun:
    front: Front
    report: SoakReport
    answers_per_second: float
    rss_growth: dict[str, float]  # process group → growth after warm-up (median to median)


def _rss_growth(
    snapshots: Sequence[Snapshot], *, started: float, warmup: float, bucket: float
) -> dict[str, float]:
    if not snapshots:
        return {}
    end = snapshots[-1].at
    first = [x for x in snapshots if started + warmup <= x.at < started + warmup + bucket]
    last = [x for x in snapshots if x.at >= end - bucket]
    if not first or not last:
        return {}
    return {
        group: statistics.median(x.rss.get(group, 0) for x in last)
        / statistics.median(x.rss[group] for x in first)
        - 1
        for group in first[0].rss
    }


def run_front(
    front: Front, *, seconds: float, warmup: float, bucket: float, record: dict[str, object]
) -> FrontRun:
    backend = "postgresql" if postgres_bin() is not None else "sqlite"
    where = "behind nginx (forward-auth)" if front == "nginx" else "standalone"
    print(f"soak {where}: {seconds:g} s on {backend}, warm-up {warmup:g} s", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix=f"bg-bench-soak-{front}-") as tmp,
        running_system(Path(tmp), backend=backend, front=front) as system,
    ):
        system.start_gateway("a", workers=2)
        system.start_gateway("b")
        system.start_renewal()
        mix, snapshots, started = asyncio.run(soak(system, seconds))
        exited = system.exited()
    record[front] = {
        "started": started,
        "samples": [dataclasses.asdict(x) for x in mix.samples],
        "snapshots": [dataclasses.asdict(x) for x in snapshots],
    }
    report = analyse(mix.samples, snapshots, started=started, warmup=warmup, bucket=bucket)
    report.checks["no process exited"] = (not exited, ", ".join(exited) or "all ran to the end")
    kinds = sorted({s.kind for s in mix.samples})
    rates = ", ".join(
        f"{k} {sum(1 for s in mix.samples if s.kind == k) / seconds:.1f}/s" for k in kinds
    )
    print(f"\n{where} rate: {len(mix.samples) / seconds:.1f} answers/s ({rates})")
    print_report(report, bucket=bucket)
    return FrontRun(
        front=front,
        report=report,
        answers_per_second=len(mix.samples) / seconds,
        rss_growth=_rss_growth(snapshots, started=started, warmup=warmup, bucket=bucket),
    )


def _median_after(report: SoakReport, pick: str, *, warmup: float) -> float:
    """The median of a figure over the buckets after the warm-up but the last (it holds the
    run's last seconds only)."""
    values = [getattr(b, pick) for b in report.buckets[:-1] if b.start >= warmup - 1e-9]
    return statistics.median(values) if values else 0.0


def print_comparison(standalone: FrontRun, nginx: FrontRun, *, warmup: float) -> None:
    """The two fronts side by side: the median of the per-bucket figures after warm-up."""
    print("\nside by side (median of the buckets after warm-up; ratio nginx / standalone)")
    print(f"{'figure':<26} {'standalone':>11} {'nginx':>11} {'ratio':>6}")
    rows: list[tuple[str, float, float, str]] = [
        ("answers/s", standalone.answers_per_second, nginx.answers_per_second, "{:.1f}"),
    ]
    for label, pick in (
        ("p50 ms", "p50"),
        ("p99 ms", "p99"),
        ("login p50 ms", "login_p50"),
        ("login p99 ms", "login_p99"),
    ):
        rows.append(
            (
                label,
                _median_after(standalone.report, pick, warmup=warmup) * 1000,
                _median_after(nginx.report, pick, warmup=warmup) * 1000,
                "{:.1f}",
            )
        )
    rows.append(
        (
            "RSS MiB at the end",
            standalone.report.buckets[-1].rss_mib,
            nginx.report.buckets[-1].rss_mib,
            "{:.1f}",
        )
    )
    rows.append(
        (
            "fds at the end",
            standalone.report.buckets[-1].fds,
            nginx.report.buckets[-1].fds,
            "{:.0f}",
        )
    )
    rows.append(
        (
            "errors",
            sum(b.errors for b in standalone.report.buckets),
            sum(b.errors for b in nginx.report.buckets),
            "{:.0f}",
        )
    )
    for label, a, b, fmt in rows:
        ratio = f"{b / a:.2f}" if a else "-"
        print(f"{label:<26} {fmt.format(a):>11} {fmt.format(b):>11} {ratio:>6}")
    for front_run in (standalone, nginx):
        growth = ", ".join(f"{g} {v:+.1%}" for g, v in front_run.rss_growth.items())
        print(f"RSS growth after warm-up, {front_run.front}: {growth}")


def main() -> None:
    seconds = float(os.environ.get("BENCH_SOAK_SECONDS", "600"))
    bucket = float(os.environ.get("BENCH_SOAK_BUCKET_SECONDS", "60"))
    warmup = float(os.environ.get("BENCH_SOAK_WARMUP_SECONDS", str(min(60.0, seconds / 5))))
    fronts = fronts_to_run(os.environ.get("BENCH_SOAK_FRONT", "both"))
    record: dict[str, object] = {}
    runs = {
        front: run_front(front, seconds=seconds, warmup=warmup, bucket=bucket, record=record)
        for front in fronts
    }
    if path := os.environ.get("BENCH_SOAK_RECORD"):  # the raw runs, to analyse again
        Path(path).write_text(json.dumps(record))
    if len(runs) == 2:
        print_comparison(runs["standalone"], runs["nginx"], warmup=warmup)
    failed = [front for front, run in runs.items() if not run.report.passed]
    if failed:
        print(f"\nFAILED checks: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
