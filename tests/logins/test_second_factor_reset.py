"""The ops reset of second factors (issue 14): TOTP, passkeys, recovery codes and remembered
browsers gone, sessions ended, a notice queued in the user's language, one audit event —
all in the caller's one transaction; other users untouched; nothing there, nothing done."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import (
    EnrolmentError,
    begin_enrolment,
    confirm_enrolment,
    remember_device,
    reset_second_factors,
)
from store import (
    Level,
    MailOutbox,
    PasskeyCredential,
    RecoveryCode,
    RememberedDevice,
    Sealer,
    User,
    WebSession,
    transaction,
)
from tests.conftest import FakeClock
from tests.logins.conftest import MakeAccount, audit_events


def arm(sessions: sessionmaker[Session], clock: FakeClock, sealer: Sealer, uid: int) -> None:
    """Give ``uid`` every kind of second factor, a remembered browser and two sessions."""
    enrolment = begin_enrolment(sessions, user_id=uid, sealer=sealer, issuer="b", now=clock())
    confirm_enrolment(
        sessions,
        user_id=uid,
        code=pyotp.TOTP(enrolment.secret).at(clock()),
        sealer=sealer,
        now=clock(),
    )
    with transaction(sessions) as s:
        for n in range(2):
            s.add(
                PasskeyCredential(
                    user_id=uid,
                    credential_id=f"cred-{uid}-{n}".encode(),
                    public_key=b"key",
                    name=f"Key {n}",
                    created_at=clock(),
                )
            )
            s.add(
                WebSession(
                    id=f"{uid:02d}{n}".ljust(64, "0"),
                    user_id=uid,
                    level=Level.STRONG,
                    method="totp",
                    created_at=clock(),
                    last_seen_at=clock(),
                    absolute_expires_at=clock() + timedelta(hours=8),
                    csrf_token="x",
                )
            )
        remember_device(s, user_id=uid, label="Firefox", validity=timedelta(days=30), now=clock())


def counts(sessions: sessionmaker[Session], uid: int) -> dict[str, object]:
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None

        def n(model: type, *where: object) -> int:
            return int(
                s.scalar(
                    select(func.count()).select_from(model).where(model.user_id == uid, *where)
                )
                or 0
            )

        return {
            "totp": user.totp_secret_sealed is not None,
            "passkeys": n(PasskeyCredential),
            "recovery_codes": n(RecoveryCode),
            "devices": n(RememberedDevice, RememberedDevice.revoked_at.is_(None)),
            "sessions": n(WebSession, WebSession.ended_at.is_(None)),
        }


ARMED = {"totp": True, "passkeys": 2, "recovery_codes": 10, "devices": 1, "sessions": 2}
BARE = {"totp": False, "passkeys": 0, "recovery_codes": 0, "devices": 0, "sessions": 0}


def test_everything_goes_with_one_audit_event_and_a_notice_in_the_users_language(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    totp_sealer: Sealer,
    outbox_sealer: Sealer,
    make_account: MakeAccount,
) -> None:
    uid = make_account(email="anna@example.org", locale="nl")
    other = make_account(email="otto@example.org")
    arm(sessions, clock, totp_sealer, uid)
    arm(sessions, clock, totp_sealer, other)
    assert counts(sessions, uid) == ARMED
    with transaction(sessions) as s:
        done = reset_second_factors(
            s, user_id=uid, actor="ops:alice", mail_sealer=outbox_sealer, now=clock()
        )
    assert done.changed and done.totp and done.email == "anna@example.org"
    assert (done.passkeys, done.recovery_codes, done.devices, done.sessions_ended) == (2, 10, 1, 2)
    assert counts(sessions, uid) == BARE
    assert counts(sessions, other) == ARMED  # nobody else's factors
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.totp_confirmed_at is None
        mail = s.scalars(select(MailOutbox)).one()
        assert (mail.template, mail.to_addr, mail.locale) == (
            "second_factor_reset_notice",
            "anna@example.org",
            "nl",
        )
        assert mail.id == done.outbox_id
    (event,) = audit_events(sessions, "user.second_factors.reset")
    assert (event.actor, event.outcome, event.user_id) == ("ops:alice", "ok", uid)
    assert event.details == {
        "totp": True,
        "passkeys": 2,
        "recovery_codes": 10,
        "devices": 1,
        "sessions_ended": 2,
        "outbox_id": done.outbox_id,
    }


def test_a_user_without_second_factors_is_left_alone(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    outbox_sealer: Sealer,
    make_account: MakeAccount,
) -> None:
    uid = make_account()
    with transaction(sessions) as s:
        s.add(
            WebSession(
                id="a" * 64,
                user_id=uid,
                level=Level.BASIC,
                method="password",
                created_at=clock(),
                last_seen_at=clock(),
                absolute_expires_at=clock() + timedelta(hours=8),
                csrf_token="x",
            )
        )
        done = reset_second_factors(
            s, user_id=uid, actor="ops:alice", mail_sealer=outbox_sealer, now=clock()
        )
    assert not done.changed and done.outbox_id is None and done.sessions_ended == 0
    assert counts(sessions, uid) == {**BARE, "sessions": 1}  # the session goes on
    with transaction(sessions) as s:
        assert s.scalar(select(func.count()).select_from(MailOutbox)) == 0
    (event,) = audit_events(sessions, "user.second_factors.reset")
    assert event.outcome == "noop"
    with transaction(sessions) as s, pytest.raises(EnrolmentError):
        reset_second_factors(
            s, user_id=uid + 100, actor="ops:alice", mail_sealer=outbox_sealer, now=clock()
        )


def test_it_is_one_transaction_with_the_callers(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    totp_sealer: Sealer,
    outbox_sealer: Sealer,
    make_account: MakeAccount,
) -> None:
    uid = make_account()
    arm(sessions, clock, totp_sealer, uid)

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction(sessions) as s:
        reset_second_factors(
            s, user_id=uid, actor="ops:alice", mail_sealer=outbox_sealer, now=clock()
        )
        raise Abort  # e.g. the process dies before the commit
    assert counts(sessions, uid) == ARMED  # nothing half-done: no factor gone, no mail
    with transaction(sessions) as s:
        assert s.scalar(select(func.count()).select_from(MailOutbox)) == 0
    assert audit_events(sessions, "user.second_factors.reset") == []
