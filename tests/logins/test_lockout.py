"""Account lockout a stranger cannot turn against a broker (issue 17, item 7).

Wrong passwords lock the account *from that address* (per account and address); a slower
global back-off per account catches guessing spread over many addresses, and spares the
broker's remembered browsers and certificate. Numbers: gateway/regulation/_limits.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import (
    InvalidCredentials,
    LockedOut,
    LoginSettings,
    login_with_password,
    remember_device,
)
from gateway.regulation import _limits as limits
from store import transaction
from tests.conftest import FakeClock
from tests.logins.conftest import PASSWORD, MakeAccount

STRANGER = "198.51.100.66"
BROKER = "203.0.113.10"


def attempt(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    password: str,
    addr: str | None,
    **kw: object,
) -> int:
    return login_with_password(
        sessions,
        identifier="anna@example.org",
        password=password,
        client_addr=addr,
        settings=settings,
        now=clock(),
        **kw,  # type: ignore[arg-type]
    ).user_id


def fail(sessions: sessionmaker[Session], clock: FakeClock, settings: LoginSettings, addr: str):
    with pytest.raises((InvalidCredentials, LockedOut)):
        attempt(sessions, clock, settings, "guess", addr)


def test_defaults_are_the_documented_numbers() -> None:
    s = LoginSettings()
    assert (s.failures_per_account, s.failure_window, s.lockout) == (
        5,
        timedelta(minutes=15),
        timedelta(minutes=15),
    )
    assert (s.failures_per_account_global, s.global_failure_window, s.global_lockout) == (
        limits.FAILURES_PER_ACCOUNT_GLOBAL,
        limits.GLOBAL_FAILURE_WINDOW,
        limits.GLOBAL_LOCKOUT,
    )
    assert limits.FAILURES_PER_ACCOUNT_GLOBAL > 5 * limits.FAILURES_PER_ACCOUNT


def test_a_stranger_locks_only_their_own_address(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    uid = make_account(email="anna@example.org")
    for _ in range(settings.failures_per_account):
        fail(sessions, clock, settings, STRANGER)
    with pytest.raises(LockedOut) as locked:  # the stranger's address is locked for anna
        attempt(sessions, clock, settings, PASSWORD, STRANGER)
    assert locked.value.until == clock() + settings.lockout
    # SECURITY (issue 17): the broker, from her own address, is not locked out.
    assert attempt(sessions, clock, settings, PASSWORD, BROKER) == uid


def test_guessing_over_many_addresses_meets_the_global_back_off(
    sessions: sessionmaker[Session], clock: FakeClock, make_account: MakeAccount
) -> None:
    settings = LoginSettings(failures_per_account_global=12)
    uid = make_account(email="anna@example.org")
    for n in range(12):  # 4 addresses x 3 failures: no address reaches its own limit
        fail(sessions, clock, settings, f"198.51.100.{n // 3}")
    with pytest.raises(LockedOut) as locked:
        attempt(sessions, clock, settings, PASSWORD, BROKER)
    assert locked.value.until == clock() + settings.global_lockout
    # ... but not a browser she confirmed a TAN in, and not her certificate.
    with transaction(sessions) as s:
        token = remember_device(
            s, user_id=uid, label="laptop", validity=timedelta(days=30), now=clock()
        )
    assert attempt(sessions, clock, settings, PASSWORD, BROKER, device_token=token) == uid
    assert attempt(sessions, clock, settings, PASSWORD, BROKER, certificate_user_id=uid) == uid
    # The negative cases: another user's certificate or a made-up token do not help.
    with pytest.raises(LockedOut):
        attempt(sessions, clock, settings, PASSWORD, BROKER, certificate_user_id=uid + 1)
    with pytest.raises(LockedOut):
        attempt(sessions, clock, settings, PASSWORD, BROKER, device_token="made-up")
    clock.advance(settings.global_lockout)
    assert attempt(sessions, clock, settings, PASSWORD, BROKER) == uid


def test_a_remembered_browser_still_meets_the_per_address_lock(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    """The device cookie lifts the global back-off only: guessing from it is still slow."""
    uid = make_account(email="anna@example.org")
    with transaction(sessions) as s:
        token = remember_device(s, user_id=uid, label="x", validity=timedelta(days=1), now=clock())
    for _ in range(settings.failures_per_account):
        with pytest.raises((InvalidCredentials, LockedOut)):
            attempt(sessions, clock, settings, "guess", STRANGER, device_token=token)
    with pytest.raises(LockedOut):
        attempt(sessions, clock, settings, PASSWORD, STRANGER, device_token=token)


def test_failures_spread_beyond_the_global_window_do_not_lock(
    sessions: sessionmaker[Session], clock: FakeClock, make_account: MakeAccount
) -> None:
    settings = LoginSettings(failures_per_account_global=6)
    uid = make_account(email="anna@example.org")
    for n in range(5):
        fail(sessions, clock, settings, f"198.51.100.{n}")
    clock.advance(settings.global_failure_window)
    fail(sessions, clock, settings, "198.51.100.9")
    assert attempt(sessions, clock, settings, PASSWORD, BROKER) == uid
