"""Fixtures of the dev-run tests: a project folder, free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from brokergate._dev import DevLayout, DevPorts
from tests.conftest import free_port
from tests.devrun._dev_process import DevRun


@pytest.fixture
def free_ports() -> Callable[[], DevPorts]:
    def make() -> DevPorts:
        ports: set[int] = set()
        while len(ports) < 4:
            ports.add(free_port())
        gateway, upstream, smtp, metrics = sorted(ports)
        return DevPorts(gateway=gateway, upstream=upstream, smtp=smtp, metrics=metrics)

    return make


@pytest.fixture
def layout(tmp_path: Path) -> DevLayout:
    return DevLayout.at(tmp_path / "project")


@pytest.fixture
def dev_run() -> Iterator[Callable[[Path, DevPorts], DevRun]]:
    """Start ``brokergate dev run`` processes; every one is gone after the test."""
    started: list[DevRun] = []

    def start(project: Path, ports: DevPorts) -> DevRun:
        project.mkdir(parents=True, exist_ok=True)
        run = DevRun(project, ports)
        started.append(run)
        return run

    yield start
    for run in started:  # a failed assertion must not leave processes behind
        run.kill()
