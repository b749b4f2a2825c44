"""Bounded waiting for the tests: one loop instead of a copy in every file.

Tests wait for something another task, thread or process does (a trust cache catching a
revocation, a port opening, a close frame arriving). Each wait here is bounded in time
(``timeout``) and so in the number of probes; on timeout it fails with the caller's
``message`` and the last value seen, so a failure says what was awaited and what was there
instead. Nothing waits for a clock-driven expiry: tests move the injected clock for that.

- ``wait_for`` / ``async_wait_for``: probe until ``until(value)`` holds; return that value.
- ``async_holds_for``: probe for ``duration`` and fail as soon as ``holds(value)`` does not
  (the negative case: "stays open", "is not closed yet").

The probe is called once more after the deadline passes, so a condition that became true
during the last sleep is not reported as a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL = 0.05  # seconds between probes: fast enough, and a quiet loop on 2 cores


def _truthy(value: Any) -> bool:
    return bool(value)


def _timeout_error(message: str, timeout: float, last: Any) -> AssertionError:
    return AssertionError(f"{message} (not within {timeout:g} s; last value: {last!r})")


def wait_for(
    probe: Callable[[], T],
    *,
    timeout: float,
    message: str,
    until: Callable[[T], bool] = _truthy,
    interval: float = DEFAULT_INTERVAL,
) -> T:
    """Call ``probe`` every ``interval`` seconds until ``until(value)``; return that value.

    Raises:
        AssertionError: ``until`` did not hold within ``timeout`` seconds (``message`` and
            the last value in the text). Exceptions from ``probe`` propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise _timeout_error(message, timeout, value)
        time.sleep(interval)


async def async_wait_for(
    probe: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    # ASYNC109 prefers asyncio.timeout(); a cancelled await could not report the last value.
    timeout: float,  # noqa: ASYNC109
    message: str,
    until: Callable[[T], bool] = _truthy,
    interval: float = DEFAULT_INTERVAL,
) -> T:
    """``wait_for`` on the event loop: ``probe`` may be a coroutine function or a plain one
    (for state another task changes); sleeps with ``asyncio.sleep``.

    Raises:
        AssertionError: as ``wait_for``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await _call(probe)
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise _timeout_error(message, timeout, value)
        await asyncio.sleep(interval)


async def async_holds_for(
    probe: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    duration: float,
    message: str,
    holds: Callable[[T], bool] = _truthy,
    interval: float = DEFAULT_INTERVAL,
) -> T:
    """Probe for ``duration`` seconds; every value must satisfy ``holds``. Returns the last.

    Raises:
        AssertionError: ``holds`` failed for a value (``message`` and that value).
    """
    deadline = time.monotonic() + duration
    while True:
        value = await _call(probe)
        if not holds(value):
            raise AssertionError(f"{message} (changed within {duration:g} s: {value!r})")
        if time.monotonic() >= deadline:
            return value
        await asyncio.sleep(interval)


async def _call(probe: Callable[[], Awaitable[T]] | Callable[[], T]) -> T:
    result = probe()
    if isinstance(result, Awaitable):
        return await result  # type: ignore[no-any-return]
    return result
