"""``brokergate user resend-activation`` and ``reset-totp``, run as the real console script."""

from __future__ import annotations

from pathlib import Path

import pyotp
from sqlalchemy import select

from gateway.logins import begin_enrolment, confirm_enrolment
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
from tests.conftest import CliRunner
from tests.logins.conftest import SECRET


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


def test_reset_totp(run_cli: CliRunner, tmp_path: Path) -> None:
    assert run_cli("db", "upgrade").code == 0
    assert (
        run_cli(
            "user",
            "add",
            "--broker",
            "60/123/4567",
            "--email",
            "anna@example.org",
            "--name",
            "Anna",
        ).code
        == 0
    )
    engine, sessions = _db(tmp_path)
    sealer = Sealer(secret=SECRET, purpose="totp")
    with transaction(sessions) as s:
        uid = s.scalars(select(User.id)).one()
    enrolment = begin_enrolment(
        sessions, user_id=uid, sealer=sealer, issuer="b", now=system_clock()
    )
    confirm_enrolment(
        sessions,
        user_id=uid,
        code=pyotp.TOTP(enrolment.secret).now(),
        sealer=sealer,
        now=system_clock(),
    )
    result = run_cli("user", "reset-totp", "anna@example.org")
    assert result.code == 0, result.err
    assert "removed" in result.out
    again = run_cli("user", "reset-totp", str(uid))
    assert again.code == 0 and "nothing changed" in again.out
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.totp_secret_sealed is None
        outcomes = list(
            s.scalars(select(AuditEvent.outcome).where(AuditEvent.action == "totp.reset"))
        )
        assert outcomes == ["ok", "noop"]
    engine.dispose()
