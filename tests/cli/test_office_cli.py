"""``brokergate office …`` and the firm side of ``brokergate user …`` (issue 13), run as the
real console script: sub-offices, rights, deactivation that ends sessions at once, and one
clear line for every refusal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway import GatewaySettings, Sessions
from store import (
    AuditEvent,
    Level,
    User,
    UserStatus,
    WebSession,
    make_engine,
    session_factory,
    transaction,
)
from tests.cli.test_newcomer import one_clear_line
from tests.conftest import CliRunner

FIRM = "60/123/4567"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """The CLI's SQLite store, opened by the test to look and to set up sessions."""
    engine = make_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def firm(run_cli: CliRunner) -> CliRunner:
    """A firm with its head user (erika) and a sub-office AMS with rights DIP, DIL."""
    assert run_cli("db", "upgrade").code == 0
    head = run_cli(
        "user", "add", "--broker", FIRM, "--email", "erika@example.org", "--name", "Erika",
        "--no-activation",
    )  # fmt: skip
    assert head.code == 0, head.err
    assert f"office {FIRM}, head" in head.out
    ams = run_cli(
        "office", "add", "--broker", FIRM, "--number", "AMS", "--name", "Amsterdam",
        "--email", "ams@example.org", "--city", "Amsterdam", "--rights", "DIP,DIL",
    )  # fmt: skip
    assert ams.code == 0, ams.err
    assert f"added sub-office {FIRM}/AMS" in ams.out
    return run_cli


def _login(db: sessionmaker[Session], email: str) -> str:
    """An open gateway session of ``email`` (as a login would start it); returns its id."""
    with transaction(db) as s:
        user_id = s.scalars(select(User.id).where(User.email == email)).one()
    sessions = Sessions(factory=db, settings=GatewaySettings())
    return sessions.start(
        user_id=user_id, level=Level.STRONG, method="password", now=datetime.now(UTC)
    ).state.id


def _ended(db: sessionmaker[Session], session_id: str) -> bool:
    with transaction(db) as s:
        row = s.get(WebSession, session_id)
        assert row is not None
        return row.ended_at is not None


def test_office_list_and_show(firm: CliRunner) -> None:
    listed = firm("office", "list")
    assert listed.code == 0, listed.err
    lines = listed.out.splitlines()
    assert lines[0].split() == ["OFFICE", "NAME", "EMAIL", "RIGHTS", "STATUS", "USERS"]
    assert lines[1].startswith(FIRM + " ") and lines[2].startswith(f"{FIRM}/AMS ")
    rows = json.loads(firm("office", "list", "--json", "--broker", FIRM).out)
    assert [(r["ref"], r["kind"], r["rights"], r["users"]) for r in rows] == [
        (FIRM, "head office", ["DIL", "DIP", "ORV"], 1),
        (f"{FIRM}/AMS", "sub-office", ["DIL", "DIP"], 0),
    ]
    shown = json.loads(firm("office", "show", f"{FIRM}/AMS", "--json").out)
    assert (shown["name"], shown["email"], shown["city"], shown["active"]) == (
        "Amsterdam",
        "ams@example.org",
        "Amsterdam",
        True,
    )
    text = firm("office", "show", FIRM)
    assert text.code == 0 and "erika@example.org" in text.out and "head" in text.out


def test_user_add_into_a_sub_office_with_role_and_rights(firm: CliRunner) -> None:
    added = firm(
        "user", "add", "--broker", FIRM, "--office", "AMS", "--email", "jan@example.org",
        "--name", "Jan", "--rights", "DIP", "--no-activation",
    )  # fmt: skip
    assert added.code == 0, added.err
    # The office's first user is its head user unless told otherwise.
    assert f"office {FIRM}/AMS, head, rights DIP" in added.out
    second = firm(
        "user", "add", "--broker", FIRM, "--office", "AMS", "--email", "ilse@example.org",
        "--name", "Ilse", "--no-activation",
    )  # fmt: skip
    assert f"office {FIRM}/AMS, employee, rights DIL,DIP" in second.out  # all the office's
    users = {u["email"]: u for u in json.loads(firm("user", "list", "--json").out)}
    assert (users["jan@example.org"]["office"], users["jan@example.org"]["role"]) == (
        f"{FIRM}/AMS",
        "head",
    )
    assert users["erika@example.org"]["rights"] == ["DIL", "DIP", "ORV"]
    only_ams = json.loads(firm("user", "list", "--office", f"{FIRM}/AMS", "--json").out)
    assert [u["email"] for u in only_ams] == ["jan@example.org", "ilse@example.org"]
    table = firm("user", "list").out.splitlines()
    assert table[0].split() == ["ID", "OFFICE", "EMAIL", "NAME", "ROLE", "RIGHTS", "STATUS"]
    shown = firm("user", "show", "ilse@example.org")
    assert "office:" in shown.out and f"{FIRM}/AMS" in shown.out and "employee" in shown.out


def test_user_rights(firm: CliRunner, db: sessionmaker[Session]) -> None:
    assert firm("user", "rights", "erika@example.org", "DIP").code == 0
    with transaction(db) as s:
        erika = s.scalars(select(User).where(User.email == "erika@example.org")).one()
        assert erika.rights == ["DIP"]
        assert s.scalars(select(AuditEvent).where(AuditEvent.action == "user.rights")).first()
    none = firm("user", "rights", "erika@example.org", "")
    assert none.code == 0 and "rights of erika@example.org: none" in none.out
    unknown = firm("user", "rights", "erika@example.org", "DIP,XYZ")
    assert unknown.code == 1 and "XYZ" in one_clear_line(unknown)


def test_office_update_and_shrinking_rights(firm: CliRunner) -> None:
    assert (
        firm(
            "user", "add", "--broker", FIRM, "--office", "AMS", "--email", "jan@example.org",
            "--name", "Jan", "--no-activation",
        ).code
        == 0
    )  # fmt: skip
    updated = firm("office", "update", f"{FIRM}/AMS", "--rights", "DIP", "--city", "")
    assert updated.code == 0, updated.err
    shown = json.loads(firm("office", "show", f"{FIRM}/AMS", "--json").out)
    assert (shown["rights"], shown["city"]) == (["DIP"], None)
    jan = json.loads(firm("user", "show", "jan@example.org", "--json").out)
    assert jan["rights"] == ["DIP"]  # the right the office lost is the user's no more
    nothing = firm("office", "update", f"{FIRM}/AMS")
    assert nothing.code == 2 and "nothing to change" in one_clear_line(nothing)


def test_office_deactivation_ends_its_users_sessions(
    firm: CliRunner, db: sessionmaker[Session]
) -> None:
    assert (
        firm(
            "user", "add", "--broker", FIRM, "--office", "AMS", "--email", "jan@example.org",
            "--name", "Jan", "--no-activation",
        ).code
        == 0
    )  # fmt: skip
    jan, erika = _login(db, "jan@example.org"), _login(db, "erika@example.org")
    off = firm("office", "deactivate", f"{FIRM}/AMS")
    assert off.code == 0, off.err
    assert "1 session(s) ended" in off.out
    assert _ended(db, jan) and not _ended(db, erika)  # the head office is not affected
    assert json.loads(firm("office", "show", f"{FIRM}/AMS", "--json").out)["active"] is False
    again = firm("office", "deactivate", f"{FIRM}/AMS")
    assert again.code == 0 and "already inactive" in again.out
    on = firm("office", "reactivate", f"{FIRM}/AMS")
    assert on.code == 0 and "reactivated" in on.out
    with transaction(db) as s:
        actions = list(s.scalars(select(AuditEvent.action)))
    assert "office.deactivate" in actions and "office.reactivate" in actions


def test_user_deactivation_ends_sessions_and_reactivation(
    firm: CliRunner, db: sessionmaker[Session]
) -> None:
    session_id = _login(db, "erika@example.org")
    off = firm("user", "deactivate", "erika@example.org")
    assert off.code == 0, off.err
    assert "1 session(s) ended" in off.out and _ended(db, session_id)
    with transaction(db) as s:
        erika = s.scalars(select(User).where(User.email == "erika@example.org")).one()
        assert erika.status == UserStatus.DISABLED
    on = firm("user", "reactivate", "erika@example.org")
    assert on.code == 0, on.err
    # Never logged in, no password: back to pending, with the way to the activation mail.
    assert "pending" in on.out and "resend-activation" in on.out
    twice = firm("user", "reactivate", "erika@example.org")
    assert twice.code == 0 and "nothing changed" in twice.out


def test_office_delete(firm: CliRunner, db: sessionmaker[Session]) -> None:
    assert (
        firm(
            "user", "add", "--broker", FIRM, "--office", "AMS", "--email", "jan@example.org",
            "--name", "Jan", "--no-activation",
        ).code
        == 0
    )  # fmt: skip
    with transaction(db) as s:
        jan = s.scalars(select(User).where(User.email == "jan@example.org")).one()
        jan.last_login_at = datetime.now(UTC)
    in_use = firm("office", "delete", f"{FIRM}/AMS")
    assert in_use.code == 1 and "deactivate" in one_clear_line(in_use)
    with transaction(db) as s:
        jan = s.scalars(select(User).where(User.email == "jan@example.org")).one()
        jan.last_login_at = None
    deleted = firm("office", "delete", f"{FIRM}/AMS")
    assert deleted.code == 0, deleted.err
    assert "with its 1 user(s)" in deleted.out
    assert json.loads(firm("office", "list", "--json").out)[-1]["ref"] == FIRM
    head = firm("office", "delete", FIRM)
    assert head.code == 1
    one_clear_line(head)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["office", "show", "60/123/4567/XYZ"], "no office '60/123/4567/XYZ'"),
        (["office", "show", "59/999/9999"], "no office '59/999/9999'"),
        (["office", "show", "Amsterdam"], "not an office reference"),
        (["office", "deactivate", "60-123-4567"], "not an office reference"),
        (
            [
                "office",
                "add",
                "--broker",
                FIRM,
                "--number",
                "AMS",
                "--name",
                "Twice",
                "--email",
                "twice@example.org",
            ],
            "AMS",
        ),
        (
            [
                "office",
                "add",
                "--broker",
                FIRM,
                "--number",
                "RTM",
                "--name",
                "Rotterdam",
                "--email",
                "ams@example.org",
            ],
            "ams@example.org",
        ),
        (
            [
                "office",
                "add",
                "--broker",
                FIRM,
                "--number",
                "RTM",
                "--name",
                "Rotterdam",
                "--email",
                "rtm@example.org",
                "--rights",
                "DIP,NOPE",
            ],
            "NOPE",
        ),
        (
            [
                "office",
                "add",
                "--broker",
                FIRM,
                "--number",
                "RTM",
                "--name",
                "Rotterdam",
                "--email",
                "not-an-address",
            ],
            "not-an-address",
        ),
        (
            [
                "user",
                "add",
                "--broker",
                FIRM,
                "--office",
                "NOPE",
                "--email",
                "x@example.org",
                "--name",
                "X",
                "--no-activation",
            ],
            "no office '60/123/4567/NOPE'",
        ),
        (
            [
                "user",
                "add",
                "--broker",
                FIRM,
                "--office",
                "AMS",
                "--email",
                "x@example.org",
                "--name",
                "X",
                "--rights",
                "ORV",
                "--no-activation",
            ],
            "ORV",
        ),
        (["user", "deactivate", "ghost@example.org"], "ghost@example.org"),
        (["user", "rights", "ghost@example.org", "DIP"], "ghost@example.org"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_refusals_are_one_clear_line(firm: CliRunner, args: list[str], expected: str) -> None:
    result = firm(*args)
    assert result.code == 1, result.out
    assert expected in one_clear_line(result)


def test_head_office_deactivation_ends_its_sub_offices_sessions_too(
    firm: CliRunner, db: sessionmaker[Session]
) -> None:
    assert (
        firm(
            "user", "add", "--broker", FIRM, "--office", "AMS", "--email", "jan@example.org",
            "--name", "Jan", "--no-activation",
        ).code
        == 0
    )  # fmt: skip
    jan, erika = _login(db, "jan@example.org"), _login(db, "erika@example.org")
    off = firm("office", "deactivate", FIRM)
    assert off.code == 0, off.err
    assert "2 session(s) ended" in off.out
    assert _ended(db, jan) and _ended(db, erika)
