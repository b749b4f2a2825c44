"""The supported Python/OpenSSL combinations (README "Supported platforms"), refused outside
them at start-up with one line that says what to do (issue 17); versions injected."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import pytest

from gateway import TLSSetupError
from gateway.tls import SUPPORTED_OPENSSL, SUPPORTED_PYTHON, check_runtime


def test_this_process_is_supported() -> None:
    check_runtime()  # the machine the suite runs on


@pytest.mark.parametrize(
    ("implementation", "python", "openssl", "named"),
    [
        ("pypy", (3, 11), (3, 0), "pypy is not supported"),
        ("cpython", (3, 10), (3, 0), "Python 3.10 is not supported"),
        ("cpython", (3, 14), (3, 0), "Python 3.14 is not supported"),
        ("cpython", (3, 11), (1, 1), "OpenSSL 1.1 is not supported"),
        ("cpython", (3, 12), (4, 0), "OpenSSL 4.0 is not supported"),
    ],
)
def test_outside_the_combinations_start_up_is_refused_in_one_line(
    implementation: str, python: tuple[int, int], openssl: tuple[int, int], named: str
) -> None:
    with pytest.raises(TLSSetupError) as refused:
        check_runtime(implementation=implementation, python=python, openssl=openssl)
    message = str(refused.value)
    assert named in message and "\n" not in message
    assert "run the gateway on CPython 3.11-3.13 linked against OpenSSL 3.0-3.5" in message


@pytest.mark.parametrize("python", [SUPPORTED_PYTHON[0], SUPPORTED_PYTHON[1]])
@pytest.mark.parametrize("openssl", [SUPPORTED_OPENSSL[0], SUPPORTED_OPENSSL[1]])
def test_the_bounds_are_inclusive(python: tuple[int, int], openssl: tuple[int, int]) -> None:
    check_runtime(implementation="cpython", python=python, openssl=openssl)


def test_the_readme_states_the_combinations() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert "## Supported platforms" in readme
    assert "CPython 3.11-3.13" in readme and "OpenSSL 3.0-3.5" in readme
    assert sys.implementation.name == "cpython" and ssl.OPENSSL_VERSION_INFO[0] == 3
