"""The 2FA set-up's mailed code (issue 14): the pure check against the session's record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.logins._settings import LoginSettings
from gateway.logins._setup_code import (
    SETUP_CODE_VALIDITY,
    SETUP_VERIFIED_FOR,
    CodeCheck,
    check_setup_code,
    is_verified,
    setup_code_hash,
    verified_record,
)

KEY = b"k" * 32
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LIMITS = LoginSettings().limits


def record(code: str = "123456", *, user_id: int = 7, session_id: str = "s1") -> dict[str, object]:
    return {
        "user_id": user_id,
        "hash": setup_code_hash(KEY, user_id=user_id, session_id=session_id, code=code),
        "expires_at": (NOW + SETUP_CODE_VALIDITY).isoformat(),
        "attempts": 0,
    }


def check(
    stored: object, code: str, *, user_id: int = 7, session_id: str = "s1", now: datetime = NOW
) -> CodeCheck:
    return check_setup_code(
        stored, code=code, user_id=user_id, session_id=session_id, key=KEY, limits=LIMITS, now=now
    )


def test_the_right_code_passes_once_and_spaces_do_not_matter() -> None:
    result = check(record(), " 123 456 ")
    assert result.why is None and result.record is None  # the record goes: single use


def test_wrong_codes_count_down_then_void_the_code() -> None:
    stored: object = record()
    for left in range(LIMITS.tan_max_attempts - 1, 0, -1):
        result = check(stored, "654321")
        assert result.why == "wrong" and result.attempts_left == left
        stored = result.record
    result = check(stored, "654321")
    assert result.why == "exhausted" and result.record is None


def test_expired_missing_and_foreign_codes_are_refused() -> None:
    assert check(record(), "123456", now=NOW + SETUP_CODE_VALIDITY).why == "expired"
    assert check(None, "123456").why == "missing"
    assert check({"garbage": 1}, "123456").why == "missing"
    # Another user's record, or the same code sent for another session, never matches.
    assert check(record(user_id=8), "123456").why == "missing"
    assert check(record(session_id="s2"), "123456").why == "wrong"


def test_the_confirmation_holds_for_its_user_and_time_only() -> None:
    done = verified_record(7, NOW)
    assert is_verified(done, user_id=7, now=NOW + SETUP_VERIFIED_FOR)
    assert not is_verified(done, user_id=7, now=NOW + SETUP_VERIFIED_FOR + timedelta(seconds=1))
    assert not is_verified(done, user_id=8, now=NOW)
    assert not is_verified(None, user_id=7, now=NOW)
