"""``brokergate mail …`` and ``brokergate renewal run --once`` as real subprocesses."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from store import (
    OUTBOX_PURPOSE,
    MailOutbox,
    MailStatus,
    Sealer,
    make_engine,
    queue_mail,
    session_factory,
    system_clock,
    transaction,
    upgrade,
)
from tests.conftest import TEST_SECRET_KEY, CliRunner
from tests.renewal.conftest import SmtpServer

PASSWORD = "tiger-lamp-7731-orbit"


@pytest.fixture
def cli_engine(cli_env: dict[str, str]) -> Iterator[Engine]:
    eng = make_engine(cli_env["BROKERGATE_STORE__URL"])
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def cli_sessions(cli_engine: Engine) -> sessionmaker[Session]:
    return session_factory(cli_engine)


def queue_password_mail(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as session:
        return queue_mail(
            session,
            kind="certificate_password",
            to_addr="erika@example.org",
            locale="de",
            template="certificate_password",
            context={
                "name": "Erika Mustermann",
                "serial": "4f3a9c",
                "not_after": "2028-11-25",
                "friendly_name": "Erika Mustermann (60/123/4567) 2028-11-25",
                "broker_number": "60/123/4567",
            },
            secrets={"password": PASSWORD},
            sealer=Sealer(secret=TEST_SECRET_KEY, purpose=OUTBOX_PURPOSE),
            now=system_clock() - timedelta(seconds=1),
        ).id


def test_mail_pending_lists_queued_mail_without_its_secret(
    run_cli: CliRunner, cli_sessions: sessionmaker[Session]
) -> None:
    empty = run_cli("mail", "pending")
    assert empty.code == 0 and "no mail is waiting" in empty.out
    mail_id = queue_password_mail(cli_sessions)
    result = run_cli("mail", "pending")
    assert result.code == 0, result.err
    assert "certificate_password" in result.out and "erika@example.org" in result.out
    assert "sealed" in result.out and "1 mail(s) waiting" in result.out
    assert PASSWORD not in result.out + result.err
    as_json = run_cli("mail", "pending", "--json")
    assert f'"id": {mail_id}' in as_json.out and '"has_secret": true' in as_json.out
    assert PASSWORD not in as_json.out

    shown = run_cli("mail", "show", str(mail_id))
    assert shown.code == 0, shown.err
    assert "sealed (never shown)" in shown.out
    assert "Subject: Passwort für Ihr Zertifikat" in shown.out
    assert "Passwort: ••••••" in shown.out and PASSWORD not in shown.out


def test_mail_status_shows_failures_and_retry_requeues(
    run_cli: CliRunner, cli_sessions: sessionmaker[Session]
) -> None:
    mail_id = queue_password_mail(cli_sessions)
    with transaction(cli_sessions) as session:
        session.execute(
            update(MailOutbox)
            .where(MailOutbox.id == mail_id)
            .values(status=MailStatus.FAILED, attempts=1, last_error="SMTP 550 5.1.1 no such user")
        )
    status = run_cli("mail", "status")
    assert status.code == 0, status.err
    assert "pending: 0, sent: 0, failed: 1" in status.out
    assert "SMTP 550 5.1.1 no such user" in status.out and str(mail_id) in status.out

    retried = run_cli("mail", "retry", str(mail_id))
    assert retried.code == 0, retried.err
    assert f"mail {mail_id} to erika@example.org is queued again" in retried.out
    with transaction(cli_sessions) as session:
        row = session.scalars(select(MailOutbox).where(MailOutbox.id == mail_id)).one()
        assert row.status is MailStatus.PENDING and row.attempts == 0
    assert "pending: 1, sent: 0, failed: 0" in run_cli("mail", "status").out


def test_mail_retry_and_show_refuse_bad_ids(
    run_cli: CliRunner, cli_sessions: sessionmaker[Session]
) -> None:
    missing = run_cli("mail", "retry", "4242")
    assert missing.code == 1 and "no mail with id 4242" in missing.err
    assert run_cli("mail", "show", "4242").code == 1
    mail_id = queue_password_mail(cli_sessions)
    with transaction(cli_sessions) as session:
        session.execute(
            update(MailOutbox).where(MailOutbox.id == mail_id).values(status=MailStatus.SENT)
        )
    sent = run_cli("mail", "retry", str(mail_id))
    assert sent.code == 1 and "already sent" in sent.err
    assert run_cli("mail", "retry", "abc").code == 2  # argparse: not an id


def test_renewal_run_once_delivers_and_exits(
    run_cli: CliRunner, cli_sessions: sessionmaker[Session], smtp_server: SmtpServer
) -> None:
    mail_id = queue_password_mail(cli_sessions)
    result = run_cli(
        "renewal",
        "run",
        "--once",
        env={"BROKERGATE_MAIL__SMTP_PORT": str(smtp_server.port)},
    )
    assert result.code == 0, result.err
    [msg] = smtp_server.sink.messages
    assert msg["Auto-Submitted"] == "auto-generated"
    assert PASSWORD not in result.out + result.err
    with transaction(cli_sessions) as session:
        row = session.get(MailOutbox, mail_id)
        assert row is not None and row.status is MailStatus.SENT and row.secret_sealed is None


def test_renewal_run_needs_its_secrets(run_cli: CliRunner, cli_engine: Engine) -> None:
    no_key = run_cli("renewal", "run", "--once", env={"BROKERGATE_STORE__SECRET_KEY": ""})
    assert no_key.code == 2 and "store.secret_key is not set" in no_key.err
    no_passphrase = run_cli("renewal", "run", "--once", env={"BROKERGATE_CA__PASSPHRASE": ""})
    assert no_passphrase.code == 2 and "--no-crl" in no_passphrase.err
    assert (
        run_cli("renewal", "run", "--once", "--no-crl", env={"BROKERGATE_CA__PASSPHRASE": ""}).code
        == 0
    )


def test_renewal_run_refuses_an_old_schema(run_cli: CliRunner) -> None:
    result = run_cli("renewal", "run", "--once")
    assert result.code == 2 and "brokergate db upgrade" in result.err


def test_cert_issue_then_mail_pending_then_renewal_delivers(
    run_cli: CliRunner, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """Issue 2's promise: the password mail is visible as queued, then delivered."""
    assert run_cli("db", "upgrade").code == 0
    assert run_cli("ca", "init").code == 0
    added = run_cli(
        "user",
        "add",
        "--broker",
        "60/123/4567",
        "--email",
        "erika@example.org",
        "--name",
        "Erika Mustermann",
        "--no-activation",  # only the password mail is counted below
    )
    assert added.code == 0, added.err
    issued = run_cli("cert", "issue", "erika@example.org", "--out", str(tmp_path / "e.p12"))
    assert issued.code == 0, issued.err
    pending = run_cli("mail", "pending")
    assert pending.code == 0, pending.err
    assert "certificate_password" in pending.out and "erika@example.org" in pending.out
    assert "sealed" in pending.out
    sent = run_cli(
        "renewal", "run", "--once", env={"BROKERGATE_MAIL__SMTP_PORT": str(smtp_server.port)}
    )
    assert sent.code == 0, sent.err
    [msg] = smtp_server.sink.messages
    text = msg.get_body(preferencelist=("plain",))
    assert text is not None
    password = re.search(r"Passwort: (\S+)", text.get_content())
    assert password is not None
    # Never printed by any command along the way.
    for result in (added, issued, pending, sent):
        assert password.group(1) not in result.out + result.err
    assert "no mail is waiting" in run_cli("mail", "pending").out
