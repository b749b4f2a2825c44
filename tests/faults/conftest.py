"""Fixtures of the fault suite: the whole system as real processes (see _system.py).

One system on PostgreSQL is shared by the package's modules (starting it costs ~10 s on a
loaded 2-core machine): replica ``a`` with two workers, replica ``b`` with one, and the
renewal process. Each test leaves it healthy (and asserts so) for the next one.
``figures`` collects what the tests measured into one JSON file (see _figures.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults._figures import Figures, figures_path
from tests.faults._system import System, postgres_bin, running_system


@pytest.fixture(scope="session")
def figures() -> Figures:
    return Figures(path=figures_path())


@pytest.fixture(scope="package")
def pg_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    if postgres_bin() is None:
        reason = "PostgreSQL server binaries (initdb, pg_ctl) missing: run `make system-deps`"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with running_system(tmp_path_factory.mktemp("faults-pg")) as system:
        system.start_gateway("a", workers=2)
        system.start_gateway("b")
        system.start_renewal()
        yield system
