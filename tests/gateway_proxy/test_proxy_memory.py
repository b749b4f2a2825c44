"""Streaming with bounded memory: a few hundred MB through a gateway in its own process.

The gateway runs as a subprocess so its resident set size (psutil) is not mixed with the
test's upstream and client. A proxy that buffered the body would grow by the body size
(300 MB); the bound allows 40 MB of noise (allocator, buffers, the first-request warm-up).
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.gateway_proxy._apps import CHUNK
from tests.polling import wait_for

BODY_SIZE = 300 * 1024 * 1024
MAX_GROWTH = 40 * 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def gateway_process(upstream_url: str, tmp_path: Path) -> Iterator[tuple[str, psutil.Process]]:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.gateway_proxy._apps", upstream_url, str(port_file)],
        cwd=REPO,
    )
    try:

        def port_written() -> str:
            if proc.poll() is not None:
                pytest.fail(f"the gateway process exited ({proc.returncode}) before it listened")
            return port_file.read_text() if port_file.exists() else ""

        wait_for(port_written, timeout=20, message="the gateway process did not start")
        yield f"http://127.0.0.1:{port_file.read_text()}", psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _generated_body(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        piece = CHUNK[: min(len(CHUNK), size - sent)]
        sent += len(piece)
        yield piece


class PeakRss:
    """Samples a process's RSS every 20 ms while the block runs."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> PeakRss:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, self.process.memory_info().rss)


async def _warm_up(client: aiohttp.ClientSession, url: str) -> None:
    for _ in range(3):
        async with client.post(url + "/echo", data=_generated_body(4 * 1024 * 1024)) as resp:
            assert resp.status == 200
        async with client.get(url + "/download?size=4194304") as resp:
            await resp.read()


@pytest.mark.slow
async def test_large_upload_streams_with_bounded_memory(
    gateway_process: tuple[str, psutil.Process],
) -> None:
    url, process = gateway_process
    expected = hashlib.sha256()
    for piece in [CHUNK] * (BODY_SIZE // len(CHUNK)):
        expected.update(piece)
    async with aiohttp.ClientSession() as client:
        await _warm_up(client, url)
        baseline = process.memory_info().rss
        async with PeakRss(process) as rss:
            async with client.post(url + "/echo", data=_generated_body(BODY_SIZE)) as resp:
                assert resp.status == 200
                echoed = await resp.json()
    assert echoed["body_size"] == BODY_SIZE
    assert echoed["body_sha256"] == expected.hexdigest()
    growth = rss.peak - baseline
    assert growth < MAX_GROWTH, f"gateway RSS grew by {growth / 2**20:.0f} MiB during the upload"


@pytest.mark.slow
async def test_large_download_streams_with_bounded_memory(
    gateway_process: tuple[str, psutil.Process],
) -> None:
    url, process = gateway_process
    async with aiohttp.ClientSession() as client:
        await _warm_up(client, url)
        baseline = process.memory_info().rss
        received = 0
        async with PeakRss(process) as rss:
            async with client.get(url + f"/download?size={BODY_SIZE}") as resp:
                # Read slowly at first so the gateway must apply back-pressure upstream
                # rather than buffer what the client does not take yet.
                await asyncio.sleep(1.0)
                async for chunk in resp.content.iter_any():
                    received += len(chunk)
    assert received == BODY_SIZE
    growth = rss.peak - baseline
    assert growth < MAX_GROWTH, f"gateway RSS grew by {growth / 2**20:.0f} MiB during the download"
