"""Fixtures of the fault suite: the whole system as real processes (see _system.py).

One system on PostgreSQL is shared by the package's modules (starting it costs ~10 s on a
loaded 2-core machine): replica ``a`` with two workers, replica ``b`` with one, and the
renewal process. Each test leaves it healthy (and asserts so) for the next one. It comes in
two fronts (``pg_system[standalone]``, ``pg_system[nginx]``: each replica behind a real
nginx in forward-auth mode); pytest runs every test of one front, then of the other.
``figures`` collects what the tests measured into one JSON file (see _figures.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults._figures import Figures, figures_path
from tests.faults._system import FRONTS, Front, System, postgres_bin, running_system
from tests.gateway_proxy._nginx import NGINX


@pytest.fixture(scope="session")
def figures() -> Figures:
    return Figures(path=figures_path())


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="package", params=FRONTS)
def pg_system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    front: Front = request.param
    if postgres_bin() is None:
        _missing("PostgreSQL server binaries (initdb, pg_ctl) missing: run `make system-deps`")
    if front == "nginx" and not Path(NGINX).exists():
        _missing("nginx is not installed: run `make system-deps`")
    with running_system(tmp_path_factory.mktemp(f"faults-pg-{front}"), front=front) as system:
        system.start_gateway("a", workers=2)
        system.start_gateway("b")
        system.start_renewal()
        yield system
