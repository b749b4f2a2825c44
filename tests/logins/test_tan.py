"""Broker-number login (seed 001): TAN by mail, single use, 15 minutes, attempts, resend,
remembered device, restricted session."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.logins import (
    DeviceRecognised,
    InvalidBrokerNumber,
    LockedOut,
    LoginSettings,
    TanInvalid,
    TanSent,
    TooSoon,
    UnknownEmail,
    confirm_tan,
    restricted_login,
    revoke_devices,
    start_broker_login,
)
from store import EmailTan, MailOutbox, Sealer, User, open_mail_secrets, transaction
from tests.conftest import FakeClock
from tests.logins.conftest import MakeAccount, audit_events


@pytest.fixture
def tan_env(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    settings: LoginSettings,
    tan_key: bytes,
    outbox_sealer: Sealer,
):  # type: ignore[no-untyped-def]
    class Env:
        def start(
            self,
            broker: str = "60/123/4567",
            email: str = "anna@example.org",
            device: str | None = None,
            addr: str | None = "127.0.0.1",
            s: LoginSettings = settings,
        ) -> TanSent | DeviceRecognised:
            return start_broker_login(
                sessions,
                broker_number=broker,
                email=email,
                device_token=device,
                client_addr=addr,
                settings=s,
                tan_key=tan_key,
                mail_sealer=outbox_sealer,
                now=clock(),
            )

        def confirm(
            self, tan_id: int, tan: str, remember: bool = False, addr: str | None = "127.0.0.1"
        ):  # type: ignore[no-untyped-def]
            return confirm_tan(
                sessions,
                tan_id=tan_id,
                tan=tan,
                remember=remember,
                device_label="Firefox",
                client_addr=addr,
                settings=settings,
                tan_key=tan_key,
                now=clock(),
            )

        def mailed_tan(self) -> str:
            with transaction(sessions) as s:
                row = s.scalars(select(MailOutbox).order_by(MailOutbox.id.desc())).first()
                assert row is not None
                return open_mail_secrets(row, outbox_sealer)["tan"]

    return Env()


def test_tan_is_mailed_through_the_outbox(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    make_account: MakeAccount,
    tan_env,
    outbox_sealer: Sealer,  # type: ignore[no-untyped-def]
) -> None:
    uid = make_account(email="anna@example.org", name="Anna Muster", locale="nl")
    sent = tan_env.start(email=" ANNA@example.org ", broker="60 123 4567")
    assert isinstance(sent, TanSent)
    assert sent.user_id == uid and sent.expires_at == clock() + timedelta(minutes=15)
    with transaction(sessions) as s:
        (mail,) = s.scalars(select(MailOutbox)).all()
        assert (mail.kind, mail.template, mail.to_addr, mail.locale) == (
            "email_tan",
            "email_tan",
            "anna@example.org",
            "nl",
        )
        assert mail.context == {
            "name": "Anna Muster",
            "broker_number": "60/123/4567",
            "valid_minutes": 15,
        }
        tan = open_mail_secrets(mail, outbox_sealer)["tan"]
        assert len(tan) == 8 and tan.isdigit()
        (row,) = s.scalars(select(EmailTan)).all()
        assert tan not in row.tan_hash and len(row.tan_hash) == 64  # an HMAC, not the TAN


def test_right_tan_logs_in_once(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    make_account: MakeAccount,
    tan_env,  # type: ignore[no-untyped-def]
) -> None:
    uid = make_account(email="anna@example.org")
    sent = tan_env.start()
    tan = tan_env.mailed_tan()
    clock.advance(timedelta(minutes=14, seconds=59))
    confirmed = tan_env.confirm(sent.tan_id, tan[:4] + " " + tan[4:])
    assert confirmed.user_id == uid and confirmed.device_token is None
    with pytest.raises(TanInvalid) as again:
        tan_env.confirm(sent.tan_id, tan)
    assert again.value.why == "used"
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.last_login_method == "email-tan"


def test_tan_expires_after_15_minutes(
    clock: FakeClock,
    make_account: MakeAccount,
    tan_env,  # type: ignore[no-untyped-def]
) -> None:
    make_account(email="anna@example.org")
    sent = tan_env.start()
    tan = tan_env.mailed_tan()
    clock.advance(timedelta(minutes=15))
    with pytest.raises(TanInvalid) as exc:
        tan_env.confirm(sent.tan_id, tan)
    assert exc.value.why == "expired"


def test_wrong_entries_use_up_the_tan(
    sessions: sessionmaker[Session],
    make_account: MakeAccount,
    tan_env,
    settings: LoginSettings,  # type: ignore[no-untyped-def]
) -> None:
    make_account(email="anna@example.org")
    sent = tan_env.start()
    tan = tan_env.mailed_tan()
    wrong = f"{(int(tan) + 1) % 10**8:08d}"
    reasons = []
    for _ in range(settings.tan_max_attempts):
        with pytest.raises(TanInvalid) as exc:
            tan_env.confirm(sent.tan_id, wrong)
        reasons.append(exc.value.why)
    assert reasons == ["wrong"] * (settings.tan_max_attempts - 1) + ["exhausted"]
    with pytest.raises(TanInvalid) as exc:  # the right TAN is void now
        tan_env.confirm(sent.tan_id, tan)
    assert exc.value.why == "exhausted"
    events = audit_events(sessions, "login.tan.confirm")
    assert len(events) == settings.tan_max_attempts + 1 and all(
        e.outcome == "failed" for e in events
    )
    assert tan not in str([e.details for e in events]) and wrong not in str(
        [e.details for e in events]
    )


def test_resend_is_throttled_and_only_the_newest_tan_counts(
    clock: FakeClock,
    make_account: MakeAccount,
    tan_env,
    settings: LoginSettings,  # type: ignore[no-untyped-def]
) -> None:
    make_account(email="anna@example.org")
    first = tan_env.start()
    first_tan = tan_env.mailed_tan()
    clock.advance(timedelta(seconds=30))
    with pytest.raises(TooSoon) as soon:
        tan_env.start()
    assert soon.value.until == clock() + timedelta(seconds=30)
    clock.advance(timedelta(seconds=30))
    second = tan_env.start()
    assert isinstance(second, TanSent) and second.tan_id != first.tan_id
    with pytest.raises(TanInvalid):
        tan_env.confirm(first.tan_id, first_tan)
    assert tan_env.confirm(second.tan_id, tan_env.mailed_tan()).user_id


def test_mails_per_window_are_capped(
    clock: FakeClock,
    make_account: MakeAccount,
    tan_env,
    settings: LoginSettings,  # type: ignore[no-untyped-def]
) -> None:
    make_account(email="anna@example.org")
    start = clock()
    for _ in range(settings.tan_mails_per_window):
        tan_env.start()
        clock.advance(settings.tan_resend_interval)
    with pytest.raises(TooSoon) as exc:
        tan_env.start()
    assert exc.value.until == start + settings.failure_window


def test_invalid_broker_number_and_unknown_email(
    sessions: sessionmaker[Session],
    make_account: MakeAccount,
    tan_env,  # type: ignore[no-untyped-def]
) -> None:
    make_account(email="anna@example.org", broker="60/123/4567")
    make_account(email="bert@example.org", broker="70/111/2222")
    for bad in ("70/", "12/345/6789", "not a number"):
        with pytest.raises(InvalidBrokerNumber):
            tan_env.start(broker=bad)
    with pytest.raises(UnknownEmail) as unknown:
        tan_env.start(email="max.muster@musterman.de")
    assert unknown.value.email == "max.muster@musterman.de"
    with pytest.raises(UnknownEmail):  # the address of another firm's broker is unknown here
        tan_env.start(email="bert@example.org")
    reasons = [e.details["reason"] for e in audit_events(sessions, "login.tan.start")]
    assert reasons == ["invalid_broker_number"] * 3 + ["unknown_email"] * 2


def test_failures_lock_the_client_address(
    make_account: MakeAccount,
    tan_env,  # type: ignore[no-untyped-def]
) -> None:
    make_account(email="anna@example.org")
    settings = LoginSettings(failures_per_address=3)
    for _ in range(3):
        with pytest.raises(InvalidBrokerNumber):
            tan_env.start(broker="99/999/9999", s=settings)
    with pytest.raises(LockedOut):
        tan_env.start(s=settings)
    assert isinstance(tan_env.start(s=settings, addr="127.0.0.2"), TanSent)


def test_remembered_device_skips_the_tan_for_30_days(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    make_account: MakeAccount,
    tan_env,  # type: ignore[no-untyped-def]
) -> None:
    uid = make_account(email="anna@example.org")
    other = make_account(email="bert@example.org", broker="70/111/2222")
    sent = tan_env.start()
    token = tan_env.confirm(sent.tan_id, tan_env.mailed_tan(), remember=True).device_token
    assert token
    clock.advance(timedelta(days=29))
    assert tan_env.start(device=token) == DeviceRecognised(user_id=uid)
    # The token is bound to its user: the other broker still gets a TAN.
    assert isinstance(
        tan_env.start(broker="70/111/2222", email="bert@example.org", device=token), TanSent
    )
    clock.advance(timedelta(days=1))
    assert isinstance(tan_env.start(device=token), TanSent)
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.last_login_method == "device"
    assert other


def test_revoked_device_needs_a_tan_again(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    make_account: MakeAccount,
    tan_env,  # type: ignore[no-untyped-def]
) -> None:
    uid = make_account(email="anna@example.org")
    sent = tan_env.start()
    token = tan_env.confirm(sent.tan_id, tan_env.mailed_tan(), remember=True).device_token
    with transaction(sessions) as s:
        assert revoke_devices(s, user_id=uid, actor=f"user:{uid}", now=clock()) == 1
    clock.advance(timedelta(minutes=1))
    assert isinstance(tan_env.start(device=token), TanSent)


def test_continue_without_email_gives_a_restricted_login(
    sessions: sessionmaker[Session], clock: FakeClock, make_account: MakeAccount
) -> None:
    uid = make_account(email="anna@example.org", broker="60/123/4567")
    login = restricted_login(
        sessions, broker_number="601234567", email="max@muster.de", client_addr="::1", now=clock()
    )
    assert login.broker_number == "60/123/4567" and login.user_id == uid
    with pytest.raises(InvalidBrokerNumber):
        restricted_login(
            sessions, broker_number="12/345/6789", email="", client_addr=None, now=clock()
        )
    assert [e.outcome for e in audit_events(sessions, "login.restricted")] == ["ok", "failed"]
