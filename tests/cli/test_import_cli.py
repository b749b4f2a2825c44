"""``brokergate import firms FILE.csv`` (issue 13), run as the real console script, on SQLite
and PostgreSQL: the documented example imports; every bad row is listed with its line number
and then nothing is imported; ``--check`` writes nothing; re-importing is refused; a progress
bar on a terminal, plain lines otherwise.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from store import (
    AuditEvent,
    MailOutbox,
    Office,
    Organisation,
    User,
    UserRole,
    make_engine,
    session_factory,
    transaction,
)
from tests.cli.test_newcomer import one_clear_line
from tests.conftest import (
    REPO,
    CliResult,
    CliRunner,
    create_postgres_database,
    drop_postgres_database,
)

EXAMPLE = REPO / "docs" / "examples" / "firms.csv"
HEADER = "type,broker_number,office,name,email,address,postcode,city,phone,rights,role,locale\n"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The CLI's store: the run_cli SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cli.db'}"
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    url = create_postgres_database(admin_url)
    try:
        yield url
    finally:
        drop_postgres_database(admin_url, url)


@pytest.fixture
def cli(run_cli: CliRunner, store_url: str) -> CliRunner:
    """run_cli on ``store_url``, migrated."""

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        return run_cli(*args, env={"BROKERGATE_STORE__URL": store_url, **(env or {})})

    upgraded = run("db", "upgrade")
    assert upgraded.code == 0, upgraded.err
    return run


def counts(store_url: str) -> dict[str, int]:
    engine = make_engine(store_url)
    try:
        with transaction(session_factory(engine)) as s:
            return {
                "firms": s.scalar(select(func.count(Organisation.id))) or 0,
                "offices": s.scalar(select(func.count(Office.id))) or 0,
                "users": s.scalar(select(func.count(User.id))) or 0,
                "mails": s.scalar(select(func.count(MailOutbox.id))) or 0,
            }
    finally:
        engine.dispose()


NOTHING = {"firms": 0, "offices": 0, "users": 0, "mails": 0}


def test_the_documented_example_imports(cli: CliRunner, store_url: str) -> None:
    result = cli("import", "firms", str(EXAMPLE))
    assert result.code == 0, result.err
    assert "2 firm(s), 1 office(s), 5 user(s)" in result.out
    assert "5 activation mail(s) queued" in result.out
    engine = make_engine(store_url)
    with transaction(session_factory(engine)) as s:
        users = {u.email: u for u in s.scalars(select(User))}
        erika, max_, jan, ilse = (
            users[f"{n}@muster-partner.example"] for n in ("erika", "max", "jan", "ilse")
        )
        assert (erika.role, erika.office.number, erika.rights) == (
            UserRole.HEAD,
            "60/123/4567",
            ["DIL", "DIP", "ORV"],  # no rights column: all of the office's
        )
        assert (max_.role, max_.rights) == (UserRole.EMPLOYEE, ["DIP", "ORV"])
        assert jan.office.number == "AMS" and jan.office.head_office_id == erika.office_id
        assert (jan.role, jan.rights, jan.locale) == (UserRole.HEAD, ["DIL", "DIP"], "nl")
        assert (ilse.role, ilse.rights) == (UserRole.EMPLOYEE, ["DIP"])
        ams = jan.office
        assert (ams.name, ams.email, ams.city, ams.rights) == (
            "Muster & Partner Amsterdam",
            "amsterdam@muster-partner.example",
            "Amsterdam",
            ["DIL", "DIP"],
        )
        head = erika.office
        assert (head.email, head.phone, head.rights) == (
            "info@muster-partner.example",
            "+49 30 1234567",
            ["DIL", "DIP", "ORV"],
        )
        ann = users["ann@smith-brokers.example"]
        # The firm's only user is its head user; the firm has DIP only.
        assert (ann.role, ann.rights, ann.office.rights) == (UserRole.HEAD, ["DIP"], ["DIP"])
        mails = list(s.scalars(select(MailOutbox.to_addr).where(MailOutbox.kind == "activation")))
        assert sorted(mails) == sorted(users)
        actions = list(s.scalars(select(AuditEvent.action)))
        assert actions.count("user.add") == 5 and "office.add" in actions
    engine.dispose()
    assert "importing: 8/8 rows" in result.err  # not a terminal: plain progress lines


def test_every_bad_row_is_listed_and_nothing_is_imported(
    cli: CliRunner, store_url: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        HEADER
        + "firm,60/123/4567,,Good Firm,good@firm.example,,,,,DIP,,\n"  # 2: fine
        + "firm,60/12/4567,,Bad Number,x@firm.example,,,,,,,\n"  # 3
        + "office,60/123/4567,AMS,Amsterdam,ams@firm.example,,,,,XYZ,,\n"  # 4: unknown right
        + "user,60/123/4567,,No Mail,,,,,,,,\n"  # 5: no email
        + "user,60/123/4567,,Erika,erika@firm.example,,,,,,,\n"  # 6: fine
        + "user,60/123/4567,,Erika Again,ERIKA@firm.example,,,,,,,\n"  # 7: duplicate
        + "client,60/123/4567,,Who,who@firm.example,,,,,,,\n"  # 8: bad type
        + "user,60/123/4567,AMS,Jan,jan@firm.example,,,,,,,\n"  # 9: its office was refused
        + "user,60/123/4567,,Role,role@firm.example,,,,,,boss,\n"  # 10: bad role
        + "user,60/123/4567,,Rights,rights@firm.example,,,,,ORV,,\n"  # 11: not in the office
        + "user,59/999/9999,,Orphan,orphan@firm.example,,,,,,,\n"  # 12: no such firm
        + "firm,61/222/3333,,Stray,stray@firm.example,,,,,,head,\n",  # 13: role on a firm
        encoding="utf-8",
    )
    result = cli("import", "firms", str(bad))
    assert result.code == 1
    assert "Traceback" not in result.err
    refused = {
        line.split(" line ", 1)[1].split(":", 1)[0]: line
        for line in result.err.splitlines()
        if " line " in line and line.startswith(f"brokergate: {bad}")
    }
    assert sorted(refused, key=int) == [str(n) for n in (3, 4, 5, 7, 8, 9, 10, 11, 12, 13)]
    assert "60/12/4567" in refused["3"]
    assert "XYZ" in refused["4"]
    assert "'email'" in refused["5"]
    assert "erika@firm.example" in refused["7"]
    assert "client" in refused["8"]
    assert "line 4" in refused["9"]  # names the refused office's line, not "unknown office"
    assert "boss" in refused["10"]
    assert "ORV" in refused["11"]
    assert "59/999/9999" in refused["12"]
    assert "role" in refused["13"]
    assert "10 of 12 row(s) refused; nothing was imported" in result.err
    assert counts(store_url) == NOTHING


def test_check_imports_nothing(cli: CliRunner, store_url: str) -> None:
    result = cli("import", "firms", "--check", str(EXAMPLE))
    assert result.code == 0, result.err
    assert "check passed" in result.out and "would import 2 firm(s), 1 office(s), 5 user(s)" in (
        result.out
    )
    assert "checking: 8/8 rows" in result.err
    assert counts(store_url) == NOTHING
    # ... and then the same file really imports.
    assert cli("import", "firms", str(EXAMPLE)).code == 0
    assert counts(store_url) == {"firms": 2, "offices": 3, "users": 5, "mails": 5}


def test_reimporting_the_same_file_is_refused(cli: CliRunner, store_url: str) -> None:
    assert cli("import", "firms", str(EXAMPLE)).code == 0
    before = counts(store_url)
    again = cli("import", "firms", str(EXAMPLE))
    assert again.code == 1
    assert "60/123/4567 exists already" in again.err
    assert "8 of 8 row(s) refused" in again.err  # every row: its firm, office or user exists
    assert counts(store_url) == before


def test_no_activation_queues_no_mail(cli: CliRunner, store_url: str) -> None:
    result = cli("import", "firms", "--no-activation", str(EXAMPLE))
    assert result.code == 0, result.err
    assert "no activation mails" in result.out
    assert counts(store_url) == {"firms": 2, "offices": 3, "users": 5, "mails": 0}


def test_new_users_for_an_existing_firm_need_no_firm_row(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    assert run_cli("db", "upgrade").code == 0
    assert run_cli("import", "firms", str(EXAMPLE), "--no-activation").code == 0
    more = tmp_path / "more.csv"
    # Semicolons, as spreadsheets in de/nl write them, and a header in another order.
    more.write_text(
        "email;name;type;broker_number;office;rights\n"
        "piet@muster-partner.example;Piet;user;60/123/4567;AMS;DIL\n",
        encoding="utf-8",
    )
    result = run_cli("import", "firms", str(more), "--no-activation")
    assert result.code == 0, result.err
    assert "0 firm(s), 0 office(s), 1 user(s)" in result.out
    shown = run_cli("user", "show", "piet@muster-partner.example")
    assert "60/123/4567/AMS" in shown.out and "DIL" in shown.out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"type,broker,name\nfirm,60/123/4567,X\n", "unknown column(s) broker"),
        (b"name,email\nX,x@example.org\n", "missing column(s) type, broker_number"),
        (HEADER.encode(), "has no rows below its header"),
        (HEADER.encode() + "firm,60/123/4567,,Müller\n".encode("latin-1"), "not UTF-8"),
    ],
    ids=["unknown-column", "missing-column", "no-rows", "latin-1"],
)
def test_a_file_that_cannot_be_read_is_one_clear_line(
    run_cli: CliRunner, tmp_path: Path, content: bytes, expected: str
) -> None:
    assert run_cli("db", "upgrade").code == 0
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    result = run_cli("import", "firms", str(path))
    assert result.code == 1
    assert expected in one_clear_line(result)


def test_a_missing_file_or_secret_key_is_one_clear_line(run_cli: CliRunner, tmp_path: Path) -> None:
    assert run_cli("db", "upgrade").code == 0
    missing = run_cli("import", "firms", str(tmp_path / "nope.csv"))
    assert missing.code == 1 and "cannot read" in one_clear_line(missing)
    no_key = run_cli("import", "firms", str(EXAMPLE), env={"BROKERGATE_STORE__SECRET_KEY": ""})
    assert no_key.code == 2 and "secret_key" in one_clear_line(no_key)
    # --check needs no key: it sends nothing.
    assert (
        run_cli(
            "import", "firms", "--check", str(EXAMPLE), env={"BROKERGATE_STORE__SECRET_KEY": ""}
        ).code
        == 0
    )


def test_plain_progress_lines_are_bounded(run_cli: CliRunner, tmp_path: Path) -> None:
    assert run_cli("db", "upgrade").code == 0
    rows = [HEADER, "firm,60/123/4567,,Big Firm,big@firm.example,,,,,,,\n"]
    rows += [f"user,60/123/4567,,User {n},user{n}@firm.example,,,,,,,\n" for n in range(99)]
    path = tmp_path / "big.csv"
    path.write_text("".join(rows), encoding="utf-8")
    result = run_cli("import", "firms", str(path), "--no-activation")
    assert result.code == 0, result.err
    lines = [line for line in result.err.splitlines() if line.startswith("importing:")]
    assert lines[0] == "importing: 10/100 rows" and lines[-1] == "importing: 100/100 rows"
    assert len(lines) == 10


def test_a_terminal_gets_a_progress_bar(cli_env: dict[str, str], tmp_path: Path) -> None:
    """stderr on a pseudo-terminal: tqdm's bar (carriage returns, a percentage)."""
    env = {**cli_env}
    assert (
        subprocess.run(
            [sys.executable, "-m", "brokergate", "db", "upgrade"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
        ).returncode
        == 0
    )
    leader, follower = pty.openpty()
    chunks: list[bytes] = []
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "brokergate", "import", "firms", "--check", str(EXAMPLE)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=follower,
        )
        os.close(follower)  # the child holds the only copy: EOF (EIO) once it exits
        follower = -1
        # Read while it runs (a pty drops unread output when its last writer goes away);
        # bounded: ends with the child, which the timeout below bounds.
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=120) == 0
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    screen = b"".join(chunks).decode()
    assert "checking: 100%" in screen and "8/8" in screen
    assert "checking: 8/8 rows" not in screen  # the plain lines are for logs only
