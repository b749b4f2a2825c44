"""The bounded waits of tests/polling.py: the value on success, the message and last value
on timeout, a failing probe's own error, and the negative wait (holds for a while)."""

from __future__ import annotations

import itertools

import pytest

from tests.polling import async_holds_for, async_wait_for, wait_for


def test_wait_for_returns_the_first_value_that_satisfies_until() -> None:
    counter = itertools.count()
    assert (
        wait_for(lambda: next(counter), until=lambda n: n >= 3, timeout=5, interval=0, message="x")
        == 3
    )


def test_wait_for_fails_with_the_message_and_the_last_value() -> None:
    with pytest.raises(
        AssertionError, match=r"never ready \(not within 0.05 s; last value: 'no'\)"
    ):
        wait_for(
            lambda: "no",
            until=lambda v: v == "yes",
            timeout=0.05,
            interval=0.01,
            message="never ready",
        )


def test_wait_for_lets_the_probe_fail_the_wait_at_once() -> None:
    def probe() -> bool:
        raise RuntimeError("the process exited")

    with pytest.raises(RuntimeError, match="exited"):
        wait_for(probe, timeout=5, message="x")


async def test_async_wait_for_awaits_a_coroutine_probe_and_calls_a_plain_one() -> None:
    counter = itertools.count()

    async def probe() -> int:
        return next(counter)

    assert (
        await async_wait_for(probe, until=lambda n: n == 2, timeout=5, interval=0, message="x") == 2
    )
    assert await async_wait_for(lambda: "ready", timeout=5, message="x") == "ready"
    with pytest.raises(AssertionError, match=r"still 0 \(not within 0.05 s; last value: 0\)"):
        await async_wait_for(lambda: 0, timeout=0.05, interval=0.01, message="still 0")


async def test_async_holds_for_fails_as_soon_as_the_value_changes() -> None:
    assert (
        await async_holds_for(
            lambda: "open", holds=lambda v: v == "open", duration=0.05, interval=0.01, message="x"
        )
        == "open"
    )
    states = iter(["open", "open", "closed", "open"])
    with pytest.raises(AssertionError, match=r"closed early \(changed within 5 s: 'closed'\)"):
        await async_holds_for(
            lambda: next(states),
            holds=lambda v: v == "open",
            duration=5,
            interval=0,
            message="closed early",
        )
