"""Password login: no enumeration, throttling per account and address, audit, rehash."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy.orm import Session, sessionmaker

from gateway import LoginRefused
from gateway.logins import (
    InvalidCredentials,
    LockedOut,
    LoginSettings,
    PasswordRejected,
    _passwords,
    check_password,
    login_with_password,
    validate_new_password,
)
from store import User, UserRole, UserStatus, transaction
from tests.conftest import FakeClock
from tests.logins.conftest import PASSWORD, MakeAccount, audit_events


def login(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    ident: str,
    password: str,
    addr: str | None = "127.0.0.1",
):  # type: ignore[no-untyped-def]
    return login_with_password(
        sessions,
        identifier=ident,
        password=password,
        client_addr=addr,
        settings=settings,
        now=clock(),
    )


def test_right_password_logs_in_and_records_the_login(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    uid = make_account(email="anna@example.org")
    result = login(sessions, clock, settings, " Anna@Example.org ", PASSWORD)
    assert result.user_id == uid and not result.needs_second_factor
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None
        assert user.last_login_at == clock() and user.last_login_method == "password"
    (event,) = audit_events(sessions, "login.password")
    assert event.outcome == "ok" and event.client_addr == "127.0.0.1"


def test_unknown_user_and_wrong_password_look_the_same(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_account(email="anna@example.org")
    verified: list[str] = []
    real = _passwords._HASHER

    class CountingHasher:
        def verify(self, hash_: str, password: str) -> bool:
            verified.append(hash_)
            return real.verify(hash_, password)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    monkeypatch.setattr(_passwords, "_HASHER", CountingHasher())
    with pytest.raises(InvalidCredentials) as wrong:
        login(sessions, clock, settings, "anna@example.org", "wrong password!")
    with pytest.raises(InvalidCredentials) as unknown:
        login(sessions, clock, settings, "nobody@example.org", "wrong password!")
    assert str(wrong.value) == str(unknown.value)
    assert wrong.value.key == unknown.value.key
    # One full argon2 verification in both cases: the unknown account costs the same time.
    assert len(verified) == 2
    assert all(h.startswith("$argon2id$") for h in verified)
    events = audit_events(sessions, "login.password")
    assert [e.outcome for e in events] == ["failed", "failed"]
    assert "wrong password!" not in json.dumps([e.details for e in events])


def test_account_without_password_is_refused_like_an_unknown_one(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    make_account(email="new@example.org", password=None, status=UserStatus.PENDING)
    with pytest.raises(InvalidCredentials):
        login(sessions, clock, settings, "new@example.org", PASSWORD)


def test_disabled_account_with_right_password_says_so(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    make_account(email="gone@example.org", status=UserStatus.DISABLED)
    with pytest.raises(LoginRefused, match="user_disabled"):
        login(sessions, clock, settings, "gone@example.org", PASSWORD)
    with pytest.raises(InvalidCredentials):
        login(sessions, clock, settings, "gone@example.org", "not the password")


def test_account_lockout_says_until_when_and_ends(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    make_account(email="anna@example.org")
    for _ in range(settings.failures_per_account - 1):
        with pytest.raises(InvalidCredentials):
            login(sessions, clock, settings, "anna@example.org", "guess", addr=None)
    with pytest.raises(LockedOut) as locked:
        login(sessions, clock, settings, "anna@example.org", "guess", addr=None)
    assert locked.value.until == clock() + settings.lockout
    # Even the right password is refused while locked, with the same "until".
    clock.advance(timedelta(minutes=5))
    with pytest.raises(LockedOut) as again:
        login(sessions, clock, settings, "anna@example.org", PASSWORD, addr=None)
    assert again.value.until == locked.value.until
    clock.advance(settings.lockout)
    assert login(sessions, clock, settings, "anna@example.org", PASSWORD, addr=None).user_id
    assert [e.outcome for e in audit_events(sessions, "login.password")][-2:] == ["locked", "ok"]


def test_success_resets_the_account_counter(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    make_account(email="anna@example.org")
    for _ in range(settings.failures_per_account - 1):
        with pytest.raises(InvalidCredentials):
            login(sessions, clock, settings, "anna@example.org", "guess", addr=None)
    login(sessions, clock, settings, "anna@example.org", PASSWORD, addr=None)
    with pytest.raises(InvalidCredentials):  # counting starts again: not locked
        login(sessions, clock, settings, "anna@example.org", "guess", addr=None)


def test_unknown_identifiers_lock_out_like_real_accounts(
    sessions: sessionmaker[Session], clock: FakeClock, settings: LoginSettings
) -> None:
    for _ in range(settings.failures_per_account - 1):
        with pytest.raises(InvalidCredentials):
            login(sessions, clock, settings, "ghost@example.org", "guess", addr=None)
    with pytest.raises(LockedOut):
        login(sessions, clock, settings, "ghost@example.org", "guess", addr=None)


def test_client_address_is_throttled_across_accounts(
    sessions: sessionmaker[Session], clock: FakeClock, make_account: MakeAccount
) -> None:
    settings = LoginSettings(failures_per_address=4)
    uid = make_account(email="anna@example.org")
    for n in range(3):
        with pytest.raises(InvalidCredentials):
            login(sessions, clock, settings, f"spray{n}@example.org", "guess", addr="127.0.0.9")
    with pytest.raises(LockedOut):
        login(sessions, clock, settings, "other@example.org", "guess", addr="127.0.0.9")
    with pytest.raises(LockedOut):  # the right password from that address waits too
        login(sessions, clock, settings, "anna@example.org", PASSWORD, addr="127.0.0.9")
    # Another address is not affected.
    assert login(sessions, clock, settings, "anna@example.org", PASSWORD, addr="::1").user_id == uid


def test_broker_number_names_the_admin_or_the_only_user(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    solo = make_account(email="solo@example.org", broker="70/111/2222")
    assert login(sessions, clock, settings, "701112222", PASSWORD).user_id == solo
    make_account(email="emp@example.org", broker="60/123/4567", role=UserRole.EMPLOYEE)
    admin = make_account(email="head@example.org", broker="60/123/4567", role=UserRole.HEAD)
    assert login(sessions, clock, settings, "60/123/4567", PASSWORD).user_id == admin
    with pytest.raises(InvalidCredentials):
        login(sessions, clock, settings, "12/345/6789", PASSWORD)


def test_outdated_hash_parameters_are_rehashed_on_login(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    uid = make_account(email="anna@example.org", password=None)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None
        user.password_hash = weak
    login(sessions, clock, settings, "anna@example.org", PASSWORD)
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.password_hash != weak
        assert check_password(user.password_hash, PASSWORD) == (True, False)


def test_second_factor_is_required_once_enrolled(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    uid = make_account(email="anna@example.org")
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None
        user.totp_confirmed_at = clock()
        user.totp_secret_sealed = b"x"
    result = login(sessions, clock, settings, "anna@example.org", PASSWORD)
    assert result.second_factors == ("totp",)
    with transaction(sessions) as s:  # not logged in yet: the history waits for the factor
        user = s.get(User, uid)
        assert user is not None and user.last_login_at is None


@pytest.mark.parametrize(
    ("password", "repeat", "reason"),
    [
        ("short", "short", "too_short"),
        ("a" * 20, "a" * 20, "too_simple"),
        ("anna@example.org", "anna@example.org", "personal"),
        ("a good long password", "a good long passw0rd", "mismatch"),
        ("x" * 1025, "x" * 1025, "too_long"),
    ],
)
def test_new_password_rules(password: str, repeat: str, reason: str) -> None:
    with pytest.raises(PasswordRejected) as exc:
        validate_new_password(password, repeat, min_length=12, forbidden=("anna@example.org",))
    assert exc.value.reason == reason


def test_a_good_password_passes() -> None:
    validate_new_password("a good long password", "a good long password", min_length=12)
