"""The ops CLI end to end, as a subprocess: the happy paths and every bad input.

Bad input must give a clear message and a non-zero exit, and write nothing.
"""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import func, select

from store import (
    OUTBOX_PURPOSE,
    AuditEvent,
    Certificate,
    MailOutbox,
    Sealer,
    User,
    make_engine,
    open_mail_secrets,
    session_factory,
    transaction,
)
from tests.conftest import TEST_SECRET_KEY, CliRunner
from tests.softhsm import SoftHsmToken


@pytest.fixture
def db(cli_env: dict[str, str]):  # type: ignore[no-untyped-def]
    engine = make_engine(cli_env["BROKERGATE_STORE__URL"])
    yield session_factory(engine)
    engine.dispose()


def counts(db) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with transaction(db) as s:
        return {
            m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0
            for m in (User, Certificate, MailOutbox, AuditEvent)
        }


@pytest.fixture
def ready(run_cli: CliRunner) -> CliRunner:
    """A CLI whose store is migrated and whose CA is initialised, with one broker."""
    assert run_cli("db", "upgrade").code == 0
    result = run_cli("ca", "init")
    assert result.code == 0, result.err
    added = run_cli(
        "user", "add", "--broker", "60/123/4567", "--email", "Erika@Example.org",
        "--name", "Erika Mustermann",
    )  # fmt: skip
    assert added.code == 0, added.err
    return run_cli


def test_help_lists_every_command(run_cli: CliRunner) -> None:
    result = run_cli("--help")
    for command in ("ca", "user", "cert", "db", "config"):
        assert command in result.out
    assert run_cli("cert", "issue", "--help").code == 0


def test_issue_writes_private_file_and_queues_password(
    ready: CliRunner, tmp_path: Path, db
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "erika.p12"
    result = ready("cert", "issue", "erika@example.org", "--out", str(out))
    assert result.code == 0, result.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with transaction(db) as s:
        mail = s.scalars(select(MailOutbox).where(MailOutbox.kind == "certificate_password")).one()
        password = open_mail_secrets(mail, Sealer(secret=TEST_SECRET_KEY, purpose=OUTBOX_PURPOSE))[
            "password"
        ]
        assert mail.to_addr == "erika@example.org" and mail.kind == "certificate_password"
    assert password not in result.out + result.err
    key, cert, _ = pkcs12.load_key_and_certificates(out.read_bytes(), password.encode())
    assert key is not None and cert is not None
    assert "queued for erika@example.org" in result.out
    # A second issue to the same path is refused before anything is issued.
    before = counts(db)
    again = ready("cert", "issue", "erika@example.org", "--out", str(out))
    assert again.code == 1 and "exists already" in again.err
    assert counts(db) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "60-123-4567", "--email", "a@example.org", "--name", "A"], "NN/NNN/NNNN"),
        (["--broker", "60/123/456", "--email", "a@example.org", "--name", "A"], "NN/NNN/NNNN"),
        (["--broker", "60/123/4567", "--email", "not-an-email", "--name", "A"], "invalid email"),
        (["--broker", "60/123/4567", "--email", "ERIKA@example.org", "--name", "B"], "exists"),
        (["--broker", "60/123/4567", "--email", "b@example.org", "--name", "  "], "name"),
    ],
)
def test_user_add_bad_input(ready: CliRunner, db, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    before = counts(db)
    result = ready("user", "add", *args)
    assert result.code == 1
    assert message in result.err
    assert "Traceback" not in result.err
    assert counts(db) == before


def test_bad_inputs_for_cert_and_ca(ready: CliRunner, db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    before = counts(db)
    unknown = ready("cert", "issue", "nobody@example.org", "--out", str(tmp_path / "x.p12"))
    assert unknown.code == 1 and "no user 'nobody@example.org'" in unknown.err
    revoke = ready("cert", "revoke", "deadbeef", "--reason", "keyCompromise")
    assert revoke.code == 1 and "no certificate with serial" in revoke.err
    wrong = ready(
        "cert", "issue", "erika@example.org", "--out", str(tmp_path / "y.p12"),
        env={"BROKERGATE_CA__PASSPHRASE": "wrong passphrase"},
    )  # fmt: skip
    assert wrong.code == 1 and "passphrase does not open" in wrong.err
    assert not (tmp_path / "y.p12").exists()
    missing = ready("ca", "rotate", env={"BROKERGATE_CA__PASSPHRASE": ""})
    assert missing.code == 1 and "BROKERGATE_CA__PASSPHRASE" in missing.err
    twice = ready("ca", "init")
    assert twice.code == 1 and "already initialised" in twice.err
    assert counts(db) == before
    bad_reason = ready("cert", "revoke", "ab", "--reason", "lost")
    assert bad_reason.code == 2 and "invalid choice" in bad_reason.err


def test_passphrase_cannot_be_given_on_the_command_line(run_cli: CliRunner) -> None:
    result = run_cli("ca", "init", "--passphrase", "x")
    assert result.code == 2 and "unrecognized arguments" in result.err


def test_list_show_revoke_rotate_retire_bundle_crl(ready: CliRunner, tmp_path: Path) -> None:
    assert ready("cert", "issue", "erika@example.org", "--out", str(tmp_path / "e.p12")).code == 0
    listing = json.loads(ready("cert", "list", "--json").out)
    assert len(listing) == 1 and listing[0]["status"] == "valid"
    serial = listing[0]["serial"]
    assert json.loads(ready("cert", "list", "--expiring", "60d", "--json").out) == []
    assert len(json.loads(ready("cert", "list", "--expiring", "800d", "--json").out)) == 1
    assert ready("cert", "list", "--expiring", "soon").code == 2
    shown = ready("cert", "show", serial)
    assert shown.code == 0 and "erika@example.org" in shown.out

    rotated = ready("ca", "rotate")
    assert rotated.code == 0 and "generation 2 is active" in rotated.out
    refused = ready("ca", "retire", "1")
    assert refused.code == 1 and "1 live certificate" in refused.err and "--force" in refused.err
    status = json.loads(ready("ca", "status", "--json").out)
    assert [(g["generation"], g["status"], g["live_certificates"]) for g in status] == [
        (1, "rotated", 1),
        (2, "active", 0),
    ]

    revoked = ready("cert", "revoke", serial.upper(), "--reason", "keyCompromise")
    assert revoked.code == 0 and "revoked" in revoked.out
    again = ready("cert", "revoke", serial, "--reason", "keyCompromise")
    assert again.code == 0 and "already revoked" in again.out
    assert ready("ca", "retire", "1").code == 0

    bundle = tmp_path / "bundle.pem"
    assert ready("ca", "bundle", "--out", str(bundle)).code == 0
    assert bundle.read_text().count("BEGIN CERTIFICATE") == 2  # root + generation 2
    crl_dir = tmp_path / "crl"
    crl = ready("ca", "crl", "--out-dir", str(crl_dir))
    assert crl.code == 0, crl.err
    assert sorted(p.name for p in crl_dir.iterdir()) == ["gen-2.crl", "gen-2.crl.pem"]


def test_bulk_issue_continues_past_bad_rows(ready: CliRunner, tmp_path: Path, db) -> None:  # type: ignore[no-untyped-def]
    sheet = tmp_path / "brokers.csv"
    with sheet.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "broker_number", "name", "locale"])
        writer.writerow(["erika@example.org", "", "", ""])  # exists
        writer.writerow(["new@example.org", "61/222/3333", "Max Muster", "en"])  # created
        writer.writerow(["broken@example.org", "6/22/333", "Bad Number", "de"])  # refused
        writer.writerow(["ghost@example.org", "", "", ""])  # unknown, cannot create
    out = tmp_path / "out"
    out.mkdir()
    result = ready("cert", "issue", "--csv", str(sheet), "--out-dir", str(out))
    assert result.code == 1
    assert "summary: 2 issued, 2 failed" in result.out
    assert "NN/NNN/NNNN" in result.out and "ghost@example.org" in result.out
    assert sorted(p.name for p in out.iterdir()) == ["erika@example.org.p12", "new@example.org.p12"]
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(Certificate)) == 2
        passwords = select(func.count()).where(MailOutbox.kind == "certificate_password")
        assert s.scalar(passwords) == 2

    # Everyone has a certificate now: the bulk run finds nobody.
    nobody = ready("cert", "issue", "--all-without-cert", "--out-dir", str(out))
    assert nobody.code == 0 and "summary: 0 issued, 0 failed" in nobody.out
    added = ready(
        "user", "add", "--broker", "62/333/4444", "--email", "third@example.org", "--name", "T"
    )
    assert added.code == 0
    third = ready("cert", "issue", "--all-without-cert", "--out-dir", str(out))
    assert third.code == 0 and "summary: 1 issued, 0 failed" in third.out


def test_user_list_and_show(ready: CliRunner) -> None:
    users = json.loads(ready("user", "list", "--json").out)
    assert [(u["email"], u["broker_number"]) for u in users] == [
        ("erika@example.org", "60/123/4567")
    ]
    shown = ready("user", "show", "ERIKA@example.org")
    assert shown.code == 0 and "60/123/4567" in shown.out
    missing = ready("user", "show", "nobody@example.org")
    assert missing.code == 1 and "no user" in missing.err


def test_user_add_mails_an_activation_link_unless_told_not_to(ready: CliRunner, db) -> None:  # type: ignore[no-untyped-def]
    with transaction(db) as s:
        kinds = [m.kind for m in s.scalars(select(MailOutbox))]
    assert kinds == ["activation"]  # the broker added by the fixture
    quiet = ready(
        "user", "add", "--broker", "60/123/4567", "--email", "quiet@example.org", "--name", "Q",
        "--no-activation",
    )  # fmt: skip
    assert quiet.code == 0 and "activation" not in quiet.out
    with transaction(db) as s:
        assert s.scalar(select(func.count()).select_from(MailOutbox)) == 1


# --- CA keys in a PKCS#11 token (SoftHSM2) ----------------------------------------------


@pytest.fixture
def token_env(softhsm_token: SoftHsmToken, tmp_path: Path) -> dict[str, str]:
    """Settings for a CLI whose CA keys live in the test token: the PIN through a file
    (ca.pkcs11_pin_file), no CA passphrase at all."""
    pin_file = tmp_path / "token.pin"
    pin_file.write_text(softhsm_token.pin)
    pin_file.chmod(0o600)
    return {
        **softhsm_token.env(),
        "BROKERGATE_CA__PASSPHRASE": "",
        "BROKERGATE_CA__KEY_STORE": "pkcs11",
        "BROKERGATE_CA__PKCS11_MODULE": softhsm_token.module,
        "BROKERGATE_CA__PKCS11_TOKEN_LABEL": softhsm_token.label,
        "BROKERGATE_CA__PKCS11_PIN_FILE": str(pin_file),
    }


def test_ca_init_and_status_with_the_token(
    run_cli: CliRunner, token_env: dict[str, str], softhsm_token: SoftHsmToken
) -> None:
    assert run_cli("db", "upgrade", env=token_env).code == 0
    init = run_cli("ca", "init", env=token_env)
    assert init.code == 0, init.err
    assert "generated in PKCS#11 token 'brokergate-test'" in init.out
    status = run_cli("ca", "status", env=token_env)
    assert status.code == 0, status.err
    assert status.out.count("pkcs11 token 'brokergate-test' id ") == 2, status.out
    machine = json.loads(run_cli("ca", "status", "--json", env=token_env).out)
    key_id = machine[0]["key_location"].split(" id ")[1].split()[0]
    assert len(key_id) == 32 and key_id in status.out
    added = run_cli(
        "user", "add", "--broker", "60/123/4567", "--email", "erika@example.org",
        "--name", "Erika Mustermann", env=token_env,
    )  # fmt: skip
    assert added.code == 0, added.err
    issued = run_cli("cert", "issue", "erika@example.org", "--out", "erika.p12", env=token_env)
    assert issued.code == 0, issued.err
    rotated = run_cli("ca", "rotate", env=token_env)
    assert rotated.code == 0, rotated.err
    assert run_cli("ca", "retire", "1", "--force", env=token_env).code == 0
    for result in (init, status, added, issued, rotated):
        assert softhsm_token.pin not in result.out + result.err


def test_wrong_token_pin_is_a_clear_error_and_changes_nothing(
    run_cli: CliRunner, token_env: dict[str, str], tmp_path: Path, db
) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("db", "upgrade", env=token_env).code == 0
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("not-the-pin")
    result = run_cli("ca", "init", env={**token_env, "BROKERGATE_CA__PKCS11_PIN_FILE": str(wrong)})
    assert result.code == 1
    assert "the PIN does not open PKCS#11 token 'brokergate-test'" in result.err
    assert "not-the-pin" not in result.out + result.err
    assert "Traceback" not in result.err
    unknown = run_cli("ca", "init", env={**token_env, "BROKERGATE_CA__PKCS11_TOKEN_LABEL": "nope"})
    assert unknown.code == 1 and "no PKCS#11 token labelled 'nope'" in unknown.err
    assert run_cli("ca", "status", env=token_env).code == 1  # still not initialised
