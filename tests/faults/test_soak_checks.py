"""The soak's checks (bench/soak.py ``analyse``) on recorded runs: each one can fail."""

from __future__ import annotations

import pytest

from bench.soak import Snapshot, analyse, fronts_to_run
from tests.faults._load import Sample

MIB = 2**20


def _names(
    *,
    rss_end: float = 100.0,
    nginx_rss_end: float = 10.0,
    fds_end: int = 20,
    slow_minute: int | None = None,
    error_at: float | None = None,
) -> dict[str, bool]:
    samples = [
        Sample(
            at=t / 10,
            kind="sso",
            replica="a",
            latency=0.3 if slow_minute is not None and int(t / 600) == slow_minute else 0.01,
            outcome="error:ClientOSError" if error_at == t / 10 else "ok",
        )
        for t in range(3000)  # 300 s, ten answers a second
    ]
    samples += [
        Sample(at=t, kind="password", replica="a", latency=0.5, outcome="ok")
        for t in range(0, 300, 2)
    ]
    snapshots = [
        Snapshot(
            at=float(t),
            rss={
                "gateway": int((100.0 if t < 200 else rss_end) * MIB),
                "nginx": int((10.0 if t < 200 else nginx_rss_end) * MIB),
            },
            fds={"a/1": 20 if t < 200 else fds_end, "nginx-a/2": 8},
            upstream_sockets=2,
        )
        for t in range(0, 301, 5)
    ]
    report = analyse(samples, snapshots, started=0.0, warmup=60.0, bucket=60.0)
    assert len(report.buckets) == 5
    return {name: ok for name, (ok, _) in report.checks.items()}


def _run(**faults: float | int | None) -> dict[str, bool]:
    """The checks by short name; ``RSS growth after warm-up`` fails if any group does."""
    short: dict[str, bool] = {}
    for name, ok in _names(**faults).items():  # type: ignore[arg-type]
        key = name.split(" (")[0].split(" within")[0]
        short[key] = short.get(key, True) and ok
    return short


def test_a_steady_run_passes_every_check() -> None:
    assert all(_run().values()), _run()


def test_each_check_fails_on_its_own_fault() -> None:
    assert _run(rss_end=104.0)["RSS growth after warm-up"]
    assert not _run(rss_end=106.0)["RSS growth after warm-up"]
    # behind nginx its processes are a group of their own: a leak there fails on its own
    checks = _names(nginx_rss_end=10.6)
    assert not checks["RSS growth after warm-up (nginx)"]
    assert checks["RSS growth after warm-up (gateway)"]
    assert _names(nginx_rss_end=10.4)["RSS growth after warm-up (nginx)"]
    assert not _run(fds_end=30)["open file descriptors flat"]
    assert _run(fds_end=24)["open file descriptors flat"]  # +4: a few connections in flight
    assert not _run(slow_minute=3)["p99"]
    assert _run(slow_minute=0)["p99"]  # the warm-up minute is not the reference
    assert not _run(error_at=150.0)["no errors, no grant beyond the level"]


def test_the_front_to_run() -> None:
    assert fronts_to_run("both") == ("standalone", "nginx")
    assert fronts_to_run("nginx") == ("nginx",)
    with pytest.raises(SystemExit, match="BENCH_SOAK_FRONT='caddy' is not a front"):
        fronts_to_run("caddy")
