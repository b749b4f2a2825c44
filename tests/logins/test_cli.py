"""``brokergate user resend-activation`` and ``reset-2fa`` (alias ``reset-totp``), run as the real
console script."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from store import (
    OUTBOX_PURPOSE,
    AuditEvent,
    MailOutbox,
    Sealer,
    User,
    make_engine,
    open_mail_secrets,
    session_factory,
    system_clock,
    transaction,
)
from tests.conftest import CliRunner, FakeClock
from tests.logins.conftest import SECRET
from tests.logins.test_second_factor_reset import ARMED, BARE, arm, counts


def _db(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    return engine, session_factory(engine)


def test_resend_activation_queues_a_link(run_cli: CliRunner, tmp_path: Path) -> None:
    assert run_cli("db", "upgrade").code == 0
    add = run_cli(
        "user",
        "add",
        "--broker",
        "60/123/4567",
        "--email",
        "nina@example.org",
        "--name",
        "Nina Neu",
        "--no-activation",  # so that the link below is the only one
    )
    assert add.code == 0, add.err
    result = run_cli(
        "user",
        "resend-activation",
        "nina@example.org",
        env={"BROKERGATE_GATEWAY__PUBLIC_URL": "https://portal.example.org"},
    )
    # An active account with no password yet may be (re)sent its link.
    assert result.code == 0, result.err
    assert "activation link queued for nina@example.org" in result.out
    engine, sessions = _db(tmp_path)
    with transaction(sessions) as s:
        mail = s.scalars(select(MailOutbox).where(MailOutbox.kind == "activation")).one()
        link = open_mail_secrets(mail, Sealer(secret=SECRET, purpose=OUTBOX_PURPOSE))["link"]
        assert link.startswith("https://portal.example.org/_gateway/activate/")
        event = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "user.activation.sent")
        ).one()
        assert event.actor.startswith("ops:")
    engine.dispose()
    assert link.split("/")[-1] not in result.out + result.err  # the secret link is never printed


def test_resend_activation_bad_input(run_cli: CliRunner) -> None:
    assert run_cli("db", "upgrade").code == 0
    unknown = run_cli("user", "resend-activation", "ghost@example.org")
    assert unknown.code == 1 and "ghost@example.org" in unknown.err
    no_key = run_cli("user", "resend-activation", "1", env={"BROKERGATE_STORE__SECRET_KEY": ""})
    assert no_key.code == 2 and "secret_key" in no_key.err


def test_reset_2fa_removes_every_second_factor_ends_sessions_and_notifies(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    assert run_cli("db", "upgrade").code == 0
    add = ("user", "add", "--broker", "60/123/4567", "--name", "Anna", "--locale", "nl")
    assert run_cli(*add, "--email", "anna@example.org", "--no-activation").code == 0
    assert run_cli(*add, "--email", "otto@example.org", "--no-activation").code == 0
    engine, sessions = _db(tmp_path)
    clock = FakeClock(system_clock())
    sealer = Sealer(secret=SECRET, purpose="totp")
    with transaction(sessions) as s:
        anna, otto = s.scalars(select(User.id).order_by(User.id)).all()
    arm(sessions, clock, sealer, anna)
    arm(sessions, clock, sealer, otto)

    result = run_cli("user", "reset-2fa", "anna@example.org")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "second factors of anna@example.org reset: removed authenticator app, 2 passkey(s), "
        "10 recovery code(s), 1 remembered browser(s); 2 session(s) ended; notice mail "
        "queued. They log in with their password and are asked to set up a new second factor."
    ]
    assert counts(sessions, anna) == BARE and counts(sessions, otto) == ARMED
    with transaction(sessions) as s:
        mail = s.scalars(select(MailOutbox)).one()
        assert (mail.template, mail.to_addr, mail.locale) == (
            "second_factor_reset_notice",
            "anna@example.org",
            "nl",  # the user's language
        )
        (event,) = s.scalars(
            select(AuditEvent).where(AuditEvent.action == "user.second_factors.reset")
        )
        assert event.actor.startswith("ops:") and event.user_id == anna
        assert event.details["passkeys"] == 2 and event.details["sessions_ended"] == 2

    # Again, under the old name and as JSON: nothing left, nothing changed, exit 0.
    again = run_cli("user", "reset-totp", str(anna), "--json")
    assert again.code == 0, again.err
    assert json.loads(again.out) == {
        "user_id": anna,
        "email": "anna@example.org",
        "changed": False,
        "removed": {"totp": False, "passkeys": 0, "recovery_codes": 0, "remembered_devices": 0},
        "sessions_ended": 0,
        "notice_queued": False,
        "valid_certificates": 0,
    }
    plain = run_cli("user", "reset-2fa", "anna@example.org")
    assert plain.code == 0 and plain.out.strip() == (
        "anna@example.org has no second factor (no authenticator app, passkey, recovery code "
        "or remembered browser); nothing changed"
    )
    with transaction(sessions) as s:
        outcomes = list(
            s.scalars(
                select(AuditEvent.outcome)
                .where(AuditEvent.action == "user.second_factors.reset")
                .order_by(AuditEvent.id)
            )
        )
        assert outcomes == ["ok", "noop", "noop"]
        assert s.scalar(select(func.count()).select_from(MailOutbox)) == 1
    engine.dispose()


def test_reset_2fa_bad_input(run_cli: CliRunner) -> None:
    assert run_cli("db", "upgrade").code == 0
    unknown = run_cli("user", "reset-2fa", "ghost@example.org")
    assert unknown.code == 1 and unknown.out == ""
    assert len(unknown.err.strip().splitlines()) == 1 and "ghost@example.org" in unknown.err
    no_key = run_cli("user", "reset-2fa", "1", env={"BROKERGATE_STORE__SECRET_KEY": ""})
    assert no_key.code == 2 and "secret_key" in no_key.err
