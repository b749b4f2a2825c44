"""TOTP: enrolment confirmed by a first code, ±1 step, no replay, recovery codes, reset."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import (
    EnrolmentError,
    LockedOut,
    LoginSettings,
    SecondFactorInvalid,
    begin_enrolment,
    confirm_enrolment,
    pending_enrolment,
    remaining_recovery_codes,
    reset_totp,
    verify_second_factor,
)
from gateway.logins._totp import matching_step, time_step
from store import Sealer, User, transaction
from tests.conftest import FakeClock
from tests.logins.conftest import MakeAccount, audit_events


def code_at(secret: str, clock: FakeClock, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(clock() + timedelta(seconds=30 * steps))


def enrol(
    sessions: sessionmaker[Session], clock: FakeClock, sealer: Sealer, uid: int
) -> tuple[str, list[str]]:
    enrolment = begin_enrolment(
        sessions, user_id=uid, sealer=sealer, issuer="brokergate", now=clock()
    )
    codes = confirm_enrolment(
        sessions, user_id=uid, code=code_at(enrolment.secret, clock), sealer=sealer, now=clock()
    )
    return enrolment.secret, codes


def second(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    sealer: Sealer,
    settings: LoginSettings,
    uid: int,
    code: str,
) -> str:
    return verify_second_factor(
        sessions,
        user_id=uid,
        code=code,
        client_addr="127.0.0.1",
        sealer=sealer,
        settings=settings,
        now=clock(),
    )


def test_matching_step_window_and_replay_guard(clock: FakeClock) -> None:
    secret = pyotp.random_base32()
    now = clock()
    step = time_step(now)
    for offset in (-1, 0, 1):
        code = pyotp.TOTP(secret).at(now + timedelta(seconds=30 * offset))
        assert matching_step(secret, code, now, None) == step + offset
    for offset in (-2, 2):
        code = pyotp.TOTP(secret).at(now + timedelta(seconds=30 * offset))
        assert matching_step(secret, code, now, None) is None
    current = pyotp.TOTP(secret).at(now)
    assert matching_step(secret, current, now, step) is None  # already used
    assert matching_step(secret, current, now, step - 1) == step
    assert matching_step(secret, "12345", now, None) is None
    assert matching_step(secret, "abcdef", now, None) is None


def test_enrolment_shows_qr_and_key_and_needs_a_first_code(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    totp_sealer: Sealer,
    make_account: MakeAccount,
) -> None:
    uid = make_account(email="anna@example.org")
    enrolment = begin_enrolment(
        sessions, user_id=uid, sealer=totp_sealer, issuer="brokergate", now=clock()
    )
    assert enrolment.uri.startswith("otpauth://totp/brokergate:anna%40example.org?")
    assert "issuer=brokergate" in enrolment.uri and f"secret={enrolment.secret}" in enrolment.uri
    assert (
        enrolment.qr_svg.startswith("<svg")
        and "<title>brokergate: anna@example.org</title>" in enrolment.qr_svg
    )
    assert enrolment.manual_key.replace(" ", "") == enrolment.secret
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.totp_confirmed_at is None
        # Sealed at rest, not the secret itself.
        assert user.totp_secret_sealed and enrolment.secret.encode() not in user.totp_secret_sealed
    again = pending_enrolment(sessions, user_id=uid, sealer=totp_sealer, issuer="brokergate")
    assert again is not None and again.secret == enrolment.secret
    with pytest.raises(SecondFactorInvalid):
        confirm_enrolment(sessions, user_id=uid, code="000000", sealer=totp_sealer, now=clock())
    codes = confirm_enrolment(
        sessions,
        user_id=uid,
        code=code_at(enrolment.secret, clock),
        sealer=totp_sealer,
        now=clock(),
    )
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(len(c) == 19 and c.count("-") == 3 for c in codes)
    with pytest.raises(EnrolmentError):  # active: a new enrolment needs a reset first
        begin_enrolment(sessions, user_id=uid, sealer=totp_sealer, issuer="brokergate", now=clock())
    assert [e.outcome for e in audit_events(sessions, "totp.enrol.confirm")] == ["failed", "ok"]


def test_login_code_is_accepted_once(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    totp_sealer: Sealer,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    uid = make_account()
    secret, _ = enrol(sessions, clock, totp_sealer, uid)
    clock.advance(timedelta(seconds=30))
    code = code_at(secret, clock)
    assert second(sessions, clock, totp_sealer, settings, uid, code) == "totp"
    with pytest.raises(SecondFactorInvalid):  # replay of the same code
        second(sessions, clock, totp_sealer, settings, uid, code)
    # An older code within the window is refused too: its step is behind the last one.
    with pytest.raises(SecondFactorInvalid):
        second(sessions, clock, totp_sealer, settings, uid, code_at(secret, clock, -1))
    # The next step's code still works (the app's clock may be ahead).
    assert second(sessions, clock, totp_sealer, settings, uid, code_at(secret, clock, 1)) == "totp"
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.last_login_method == "totp"


def test_recovery_codes_are_single_use(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    totp_sealer: Sealer,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    uid = make_account()
    _, codes = enrol(sessions, clock, totp_sealer, uid)
    typed = codes[3].lower().replace("-", " ")  # brokers type them in any case and spacing
    assert second(sessions, clock, totp_sealer, settings, uid, typed) == "recovery-code"
    with pytest.raises(SecondFactorInvalid):
        second(sessions, clock, totp_sealer, settings, uid, codes[3])
    with pytest.raises(SecondFactorInvalid):
        second(sessions, clock, totp_sealer, settings, uid, "AAAA-BBBB-CCCC-DDDD")
    with transaction(sessions) as s:
        assert remaining_recovery_codes(s, uid) == 9


def test_wrong_codes_lock_the_account(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    totp_sealer: Sealer,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    uid = make_account()
    secret, _ = enrol(sessions, clock, totp_sealer, uid)
    clock.advance(timedelta(minutes=2))
    for _ in range(settings.failures_per_account - 1):
        with pytest.raises(SecondFactorInvalid):
            second(sessions, clock, totp_sealer, settings, uid, "000000")
    with pytest.raises(LockedOut) as locked:
        second(sessions, clock, totp_sealer, settings, uid, "000000")
    assert locked.value.until == clock() + settings.lockout
    with pytest.raises(LockedOut):  # even the right code waits for the lockout to end
        second(sessions, clock, totp_sealer, settings, uid, code_at(secret, clock))
    clock.advance(settings.lockout)
    assert second(sessions, clock, totp_sealer, settings, uid, code_at(secret, clock)) == "totp"
    outcomes = [e.outcome for e in audit_events(sessions, "login.second_factor")]
    assert outcomes.count("failed") == settings.failures_per_account - 1
    assert outcomes.count("locked") == 2 and outcomes[-1] == "ok"


def test_reset_removes_totp_and_recovery_codes(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    totp_sealer: Sealer,
    settings: LoginSettings,
    make_account: MakeAccount,
) -> None:
    uid = make_account()
    secret, codes = enrol(sessions, clock, totp_sealer, uid)
    with transaction(sessions) as s:
        assert reset_totp(s, user_id=uid, actor="ops:alice", now=clock()) is True
    with transaction(sessions) as s:
        assert reset_totp(s, user_id=uid, actor="ops:alice", now=clock()) is False
        assert remaining_recovery_codes(s, uid) == 0
    clock.advance(timedelta(seconds=30))
    with pytest.raises(SecondFactorInvalid):
        second(sessions, clock, totp_sealer, settings, uid, code_at(secret, clock))
    with pytest.raises(SecondFactorInvalid):
        second(sessions, clock, totp_sealer, settings, uid, codes[0])
    events = audit_events(sessions, "totp.reset")
    assert [(e.actor, e.outcome) for e in events] == [("ops:alice", "ok"), ("ops:alice", "noop")]


def test_secret_sealed_with_another_key_cannot_be_used(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    totp_sealer: Sealer,
    make_account: MakeAccount,
) -> None:
    uid = make_account()
    begin_enrolment(sessions, user_id=uid, sealer=totp_sealer, issuer="brokergate", now=clock())
    other = Sealer(secret=b"another-secret-key-0123456789", purpose="totp")
    from store import SealError

    with pytest.raises(SealError):
        pending_enrolment(sessions, user_id=uid, sealer=other, issuer="brokergate")
