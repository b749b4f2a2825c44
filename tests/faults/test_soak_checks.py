"""The soak's checks (bench/soak.py ``analyse``) on recorded runs: each one can fail."""

from __future__ import annotations

from bench.soak import Snapshot, analyse
from tests.faults._load import Sample

MIB = 2**20


def _run(
    *,
    rss_end: float = 100.0,
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
            rss={"gateway": int((100.0 if t < 200 else rss_end) * MIB)},
            fds={"a/1": 20 if t < 200 else fds_end},
            upstream_sockets=2,
        )
        for t in range(0, 301, 5)
    ]
    report = analyse(samples, snapshots, started=0.0, warmup=60.0, bucket=60.0)
    assert len(report.buckets) == 5
    return {name.split(" (")[0].split(" within")[0]: ok for name, (ok, _) in report.checks.items()}


def test_a_steady_run_passes_every_check() -> None:
    assert all(_run().values()), _run()


def test_each_check_fails_on_its_own_fault() -> None:
    assert _run(rss_end=104.0)["RSS growth after warm-up"]
    assert not _run(rss_end=106.0)["RSS growth after warm-up"]
    assert not _run(fds_end=30)["open file descriptors flat"]
    assert _run(fds_end=24)["open file descriptors flat"]  # +4: a few connections in flight
    assert not _run(slow_minute=3)["p99"]
    assert _run(slow_minute=0)["p99"]  # the warm-up minute is not the reference
    assert not _run(error_at=150.0)["no errors, no grant beyond the level"]
