"""The restore procedure of docs/operations.md, step by step, with the real tools
(sqlite3 .backup; pg_dump/pg_restore) and the real CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import (
    TEST_PASSPHRASE,
    CliRunner,
    create_postgres_database,
    drop_postgres_database,
)


@dataclass
class Backend:
    url: str
    backup: Callable[[Path], None]
    restore: Callable[[Path], str]  # returns the URL of the restored database


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make system-deps` installs it (Makefile SYSTEM_TOOLS)"
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        db = tmp_path / "live" / "brokergate.db"
        db.parent.mkdir()

        def backup_sqlite(target: Path) -> None:
            subprocess.run([_tool("sqlite3"), str(db), f".backup '{target}'"], check=True)

        def restore_sqlite(source: Path) -> str:
            for leftover in db.parent.glob("brokergate.db*"):  # the broken db, -wal, -shm
                leftover.unlink()
            shutil.copyfile(source, db)
            return f"sqlite:///{db}"

        yield Backend(url=f"sqlite:///{db}", backup=backup_sqlite, restore=restore_sqlite)
        return
    admin = request.getfixturevalue("postgres_admin_url")
    live = create_postgres_database(admin)
    made = [live]

    def backup_pg(target: Path) -> None:
        subprocess.run(
            [_tool("pg_dump"), "--format=custom", f"--file={target}", _libpq(live)], check=True
        )

    def restore_pg(source: Path) -> str:
        drop_postgres_database(admin, live)  # the disaster
        restored = create_postgres_database(admin)
        made.append(restored)
        subprocess.run(
            [_tool("pg_restore"), "--no-owner", f"--dbname={_libpq(restored)}", str(source)],
            check=True,
        )
        return restored

    try:
        yield Backend(url=live, backup=backup_pg, restore=restore_pg)
    finally:
        for url in made:
            drop_postgres_database(admin, url)


pytestmark = pytest.mark.slow  # some twenty CLI processes per backend


def issued_serial(output: str) -> str:
    match = re.search(r"issued certificate ([0-9a-f]+) ", output)
    assert match, output
    return match.group(1)


def test_restore_procedure(backend: Backend, run_cli: CliRunner, tmp_path: Path) -> None:
    env = {"BROKERGATE_STORE__URL": backend.url}

    def cli(*args: str, url: str | None = None, **extra: str) -> str:
        result = run_cli(
            *args, env={**env, **({"BROKERGATE_STORE__URL": url} if url else {}), **extra}
        )
        assert result.code == 0, f"{args}: {result.err}"
        return result.out

    cli("db", "upgrade")
    cli("ca", "init")
    cli("user", "add", "--broker", "60/123/4567", "--email", "a@example.org", "--name", "A")
    cli("user", "add", "--broker", "60/123/4568", "--email", "b@example.org", "--name", "B")
    serial_a = issued_serial(cli("cert", "issue", "a@example.org", "--out", "a.p12"))
    cli("ca", "bundle", "--out", "bundle-before.pem")

    backup = tmp_path / "backup.bin"
    backend.backup(backup)

    # After the backup: a new certificate and a revocation the backup does not know.
    serial_b = issued_serial(cli("cert", "issue", "b@example.org", "--out", "b.p12"))
    cli("cert", "revoke", serial_a, "--reason", "keyCompromise")

    # Steps 2-4: restore, same secrets, upgrade.
    url = backend.restore(backup)
    cli("db", "upgrade", url=url)
    # Step 5: checks. The CA keys open with the passphrase: every CRL is re-signed.
    status = json.loads(cli("ca", "status", "--json", url=url))
    assert [g["generation"] for g in status] == [1]
    cli("ca", "crl", "--force", "--out-dir", "crl-check", url=url)
    assert (tmp_path / "crl-check" / "gen-1.crl.pem").is_file()
    wrong = run_cli(
        "ca",
        "crl",
        "--force",
        "--out-dir",
        "crl-wrong",
        env={"BROKERGATE_STORE__URL": url, "BROKERGATE_CA__PASSPHRASE": "not " + TEST_PASSPHRASE},
    )
    assert wrong.code == 1
    assert "passphrase does not open" in wrong.err
    certs = {c["serial"]: c for c in json.loads(cli("cert", "list", "--json", url=url))}
    assert serial_b not in certs  # issued after the backup: unknown (the broker downloads anew)
    assert certs[serial_a]["status"] == "valid"  # revoked after the backup: valid again ...

    # Step 6: ... so the revocation is applied again.
    cli("cert", "revoke", serial_a, "--reason", "keyCompromise", url=url)
    certs = {c["serial"]: c for c in json.loads(cli("cert", "list", "--json", url=url))}
    assert certs[serial_a]["status"] == "revoked"

    # The restored CA is the same CA: same bundle, and new certificates chain to it.
    cli("ca", "bundle", "--out", "bundle-after.pem", url=url)
    assert (tmp_path / "bundle-after.pem").read_bytes() == (
        tmp_path / "bundle-before.pem"
    ).read_bytes()
    serial_c = issued_serial(cli("cert", "issue", "b@example.org", "--out", "b2.p12", url=url))
    (tmp_path / "c.pem").write_text(cli("cert", "show", serial_c, "--pem", url=url))
    verify = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "bundle-before.pem"),
            str(tmp_path / "c.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
