"""The ops CLI as a newcomer meets it (issue 16): every error is one line that says what to
do, with a non-zero exit and no traceback (unless ``--debug``); no command creates a database
it was not told to create; key files go only where they were told to go.

All of it runs the real console script in a subprocess (``run_cli``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from store import MailOutbox, make_engine, session_factory, transaction
from tests.conftest import REPO, CliResult, CliRunner


def one_clear_line(result: CliResult) -> str:
    """The error is one line on stderr, without a traceback; returns it."""
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("brokergate: "), lines[0]
    return lines[0]


@pytest.fixture
def ready(run_cli: CliRunner) -> CliRunner:
    """A migrated store with an initialised CA and one broker (erika@example.org)."""
    assert run_cli("db", "upgrade").code == 0
    assert run_cli("ca", "init").code == 0
    added = run_cli(
        "user", "add", "--broker", "60/123/4567", "--email", "erika@example.org",
        "--name", "Erika Mustermann",
    )  # fmt: skip
    assert added.code == 0, added.err
    return run_cli


# --- point 1: empty tables ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["cert", "list"],
        ["cert", "list", "--expiring", "60d"],
        ["cert", "list", "--status", "expired"],
        ["cert", "list", "--user", "erika@example.org"],
    ],
    ids=" ".join,
)
def test_an_empty_listing_prints_its_header(ready: CliRunner, args: list[str]) -> None:
    result = ready(*args)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    assert result.out.split()[0] == "SERIAL"


def test_an_empty_certificate_listing_says_so(ready: CliRunner) -> None:
    result = ready("cert", "list", "--status", "expired")
    assert result.out.splitlines()[0].split() == [
        "SERIAL", "EMAIL", "STATUS", "VALID", "UNTIL", "DAYS", "GEN",
    ]  # fmt: skip
    assert "(none)" in result.out
    assert json.loads(ready("cert", "list", "--status", "expired", "--json").out) == []


# --- point 2: no silent database, no tracebacks --------------------------------------------


@pytest.fixture
def bare_env(cli_env: dict[str, str]) -> dict[str, str]:
    """No store URL: the CLI runs on its built-in default (./data/brokergate.db)."""
    return {k: v for k, v in cli_env.items() if k != "BROKERGATE_STORE__URL"}


def run_in(folder: Path, env: dict[str, str], *args: str) -> CliResult:
    proc = subprocess.run(
        [sys.executable, "-m", "brokergate", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    "args",
    [["cert", "list", "--expiring", "60d"], ["user", "list"], ["ca", "status"], ["db", "status"]],
    ids=" ".join,
)
def test_no_command_creates_a_database_it_was_not_told_to(
    tmp_path: Path, bare_env: dict[str, str], args: list[str]
) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    result = run_in(folder, bare_env, *args)
    assert result.code == 2
    line = one_clear_line(result)
    assert "data/brokergate.db" in line and "does not exist" in line
    assert "brokergate db upgrade" in line and "BROKERGATE_CONFIG" in line
    assert list(folder.iterdir()) == []  # neither data/ nor the file


def test_db_upgrade_is_told_to_create_the_database(
    tmp_path: Path, bare_env: dict[str, str]
) -> None:
    result = run_in(tmp_path, bare_env, "db", "upgrade")
    assert result.code == 0, result.err
    assert (tmp_path / "data" / "brokergate.db").is_file()


def test_a_database_without_tables_points_at_db_upgrade(
    run_cli: CliRunner, cli_env: dict[str, str]
) -> None:
    path = Path(cli_env["BROKERGATE_STORE__URL"].removeprefix("sqlite:///"))
    sqlite3.connect(path).close()  # an empty file: no tables
    result = run_cli("cert", "list")
    assert result.code == 1
    assert "run 'brokergate db upgrade'" in one_clear_line(result)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nonsense", "store.url"),
        ("nosuchdb://x/y", "store.url"),
        ("postgresql+psycopg://nobody@127.0.0.1:1/none", "cannot connect"),
    ],
)
def test_a_bogus_store_url_is_one_line(run_cli: CliRunner, url: str, expected: str) -> None:
    result = run_cli("user", "list", env={"BROKERGATE_STORE__URL": url})
    assert result.code in (1, 2)
    line = one_clear_line(result)
    assert expected in line
    assert "--debug" in line or "store.url" in line


def test_debug_shows_the_traceback(run_cli: CliRunner) -> None:
    result = run_cli("--debug", "user", "list", env={"BROKERGATE_STORE__URL": "nosuchdb://x/y"})
    assert result.code != 0
    assert "Traceback" in result.err


def test_a_closed_pipe_ends_quietly(cli_env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run(
        # `true` has exited (its end of the pipe closed) long before the CLI writes anything.
        f"{sys.executable} -m brokergate help-reference | true",
        shell=True,
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


# --- point 3: the secret key hint ----------------------------------------------------------


def test_user_add_without_a_config_says_where_the_dev_config_is(
    tmp_path: Path, bare_env: dict[str, str]
) -> None:
    env = {k: v for k, v in bare_env.items() if k != "BROKERGATE_STORE__SECRET_KEY"}
    assert run_in(tmp_path, env, "db", "upgrade").code == 0
    (tmp_path / "data" / "brokergate-dev.toml").write_text("# as make run writes it\n")
    result = run_in(
        tmp_path, env, "user", "add", "--broker", "60/123/4567", "--email", "a@example.org",
        "--name", "A",
    )  # fmt: skip
    assert result.code == 2
    line = one_clear_line(result)
    assert "store.secret_key" in line and "no configuration file was read" in line
    assert "export BROKERGATE_CONFIG=data/brokergate-dev.toml" in line


# --- point 4: key files only where they were told to go ------------------------------------


def test_cert_issue_needs_out_or_a_configured_folder(ready: CliRunner, tmp_path: Path) -> None:
    before = set(tmp_path.iterdir())
    result = ready("cert", "issue", "erika@example.org")
    assert result.code == 2
    line = one_clear_line(result)
    assert "--out" in line and "ca.pkcs12_dir" in line
    assert set(tmp_path.iterdir()) == before  # no stray key file in the current folder
    listed = json.loads(ready("cert", "list", "--json").out)
    assert listed == []  # and nothing was issued


def test_cert_issue_writes_into_the_configured_folder(ready: CliRunner, tmp_path: Path) -> None:
    folder = tmp_path / "issued"
    folder.mkdir()
    result = ready(
        "cert", "issue", "erika@example.org", env={"BROKERGATE_CA__PKCS12_DIR": str(folder)}
    )
    assert result.code == 0, result.err
    (written,) = folder.iterdir()
    assert written.name == "erika@example.org.p12"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    bulk = ready("cert", "issue", "--all-without-cert")
    assert bulk.code == 2 and "--out-dir" in one_clear_line(bulk)


def test_pkcs12_files_are_git_ignored() -> None:
    for name in ("erika@example.org.p12", "sub/dir/anything.p12", "x.pfx"):
        ignored = subprocess.run(
            ["git", "check-ignore", "--no-index", "-q", name], cwd=REPO, timeout=30
        )
        assert ignored.returncode == 0, f"{name} is not git-ignored"
    kept = subprocess.run(["git", "check-ignore", "--no-index", "-q", "README.md"], cwd=REPO)
    assert kept.returncode == 1


# --- point 6: a second certificate is never issued without a word --------------------------


def subjects(cli_env: dict[str, str]) -> list[str]:
    from renewal import MailRenderer

    engine = make_engine(cli_env["BROKERGATE_STORE__URL"])
    try:
        with transaction(session_factory(engine)) as session:
            rows = session.scalars(
                select(MailOutbox).where(MailOutbox.kind == "certificate_password")
            ).all()
            renderer = MailRenderer(public_url="https://portal.example")
            return [
                renderer.render_masked(
                    template=r.template, locale=r.locale, context=r.context
                ).subject
                for r in rows
            ]
    finally:
        engine.dispose()


def test_a_second_issue_is_refused_unless_asked_for(
    ready: CliRunner, tmp_path: Path, cli_env: dict[str, str]
) -> None:
    assert ready("cert", "issue", "erika@example.org", "--out", str(tmp_path / "1.p12")).code == 0
    again = ready("cert", "issue", "erika@example.org", "--out", str(tmp_path / "2.p12"))
    assert again.code == 1
    line = one_clear_line(again)
    assert "already has a valid certificate" in line
    assert "--replace" in line and "--additional" in line
    assert not (tmp_path / "2.p12").exists()
    assert len(json.loads(ready("cert", "list", "--json").out)) == 1

    extra = ready(
        "cert", "issue", "erika@example.org", "--additional", "--out", str(tmp_path / "2.p12")
    )
    assert extra.code == 0, extra.err
    listed = json.loads(ready("cert", "list", "--json").out)
    assert sorted(c["status"] for c in listed) == ["valid", "valid"]

    replaced = ready(
        "cert", "issue", "erika@example.org", "--replace", "--out", str(tmp_path / "3.p12")
    )
    assert replaced.code == 0, replaced.err
    assert "revoked 2 earlier certificate(s) (superseded)" in replaced.out
    listed = json.loads(ready("cert", "list", "--json").out)
    assert sorted(c["status"] for c in listed) == ["revoked", "revoked", "valid"]

    both = ready("cert", "issue", "erika@example.org", "--replace", "--additional")
    assert both.code == 2 and "not allowed with" in both.err

    # Three password mails, three subjects: the broker can tell them apart.
    mails = subjects(cli_env)
    assert len(mails) == 3 and len(set(mails)) == 3, mails


# --- point 8: the smaller things -----------------------------------------------------------


def test_config_check_names_its_source_once(run_cli: CliRunner, tmp_path: Path) -> None:
    assert run_cli("config", "check").out.strip() == "configuration OK (built-in defaults)"
    path = tmp_path / "brokergate.toml"
    path.write_text("[store]\necho_sql = false\n")
    assert run_cli("--config", str(path), "config", "check").out.strip() == (
        f"configuration OK (file {path})"
    )


def test_user_show_prints_times_without_microseconds(ready: CliRunner) -> None:
    result = ready("user", "show", "erika@example.org")
    assert result.code == 0, result.err
    created = next(line for line in result.out.splitlines() if line.startswith("created_at:"))
    assert re.fullmatch(r"created_at:\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", created), created


def test_top_level_help_names_every_sub_command(run_cli: CliRunner) -> None:
    from brokergate.__main__ import build_parser
    from brokergate._cli_reference import walk_commands

    top = run_cli("--help").out
    lines: dict[str, str] = {}
    for line in top.split("positional arguments:", 1)[1].splitlines():
        if re.match(r"    \S", line):
            command = line.split()[0]
            lines[command] = line
        elif line.startswith("      ") and lines:  # a wrapped help text goes on
            lines[command] += " " + line.strip()
    for path, _ in walk_commands(build_parser()):
        if len(path) == 2:
            assert path[1] in lines[path[0]], f"'{path[0]}' in --help does not name {path[1]}"


def test_makefile_names_readme_sections_that_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    headings = {
        line.lstrip("#").strip()
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("#")
    }
    named = re.findall(r'README(?: section)? "([^"]+)"', makefile)
    assert named, "the Makefile no longer names a README section: drop this test"
    for title in named:
        assert title in headings, f"the Makefile points to README {title!r}, which does not exist"


# --- point 7: dev run's overlay --------------------------------------------------------------


def test_dev_run_names_a_bad_overlay_in_one_line(run_cli: CliRunner, tmp_path: Path) -> None:
    overlay = tmp_path / "mine.toml"
    overlay.write_text("[gateway]\nport = 9999\n")
    project = tmp_path / "project"
    project.mkdir()
    result = run_cli("dev", "run", "--dir", str(project), "--overlay", str(overlay))
    assert result.code == 2
    line = one_clear_line(result)
    assert str(overlay) in line and "gateway.port" in line and "--gateway-port" in line
    assert list(project.iterdir()) == []  # refused before anything was made
    assert overlay.read_text() == "[gateway]\nport = 9999\n"
