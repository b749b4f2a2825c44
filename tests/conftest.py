"""Shared fixtures: databases (SQLite and PostgreSQL from one parametrised fixture), clock, CLI.

PostgreSQL tests need the server at 127.0.0.1:5432 (override with
BROKERGATE_TEST_PG_URL). Elsewhere they skip with the reason shown in the
summary; under CI (CI=true) an unreachable server is an error, not a skip.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ca import CASettings, CertificateAuthority, create_user
from store import (
    OUTBOX_PURPOSE,
    MailOutbox,
    Sealer,
    User,
    make_engine,
    open_mail_secrets,
    session_factory,
    transaction,
    upgrade,
)
from tests.softhsm import SoftHsmToken, make_token, softhsm_module

if TYPE_CHECKING:  # selenium is imported by the browser tests only
    from tests.logins.web.chrome import Chrome

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "BROKERGATE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


_PORTS_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port the OS reported free a moment ago, never one handed out before in
    this test run: two calls in a row can otherwise get the same port back, and a test
    that starts two servers on "free" ports then fails with "address already in use"."""
    for _ in range(200):  # bounded: the ephemeral range has thousands of ports
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _PORTS_HANDED_OUT:
            _PORTS_HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh loopback port after 200 tries")


def _postgres_unavailable() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {make_url(PG_ADMIN_URL).render_as_string()}: {exc}"


_PG_REASON: list[str | None] = []


def postgres_skip_reason() -> str | None:
    if not _PG_REASON:
        _PG_REASON.append(_postgres_unavailable())
    return _PG_REASON[0]


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    reason = postgres_skip_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run the PostgreSQL tests)")
        pytest.skip(reason)
    return PG_ADMIN_URL


def create_postgres_database(admin_url: str) -> str:
    """A fresh, empty database; returns its URL. The caller drops it (drop_postgres_database)."""
    name = f"bg_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'brokergate.db'}"
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    url = create_postgres_database(admin_url)
    try:
        yield url
    finally:
        drop_postgres_database(admin_url, url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated database (SQLite and PostgreSQL)."""
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite database, for tests where the backend does not matter."""
    eng = make_engine(f"sqlite:///{tmp_path / 'brokergate.db'}")
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@dataclass
class FakeClock:
    """An injectable clock; tests move it instead of sleeping."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))


@dataclass
class CliResult:
    code: int
    out: str
    err: str


CliRunner = Callable[..., CliResult]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running ``brokergate`` as a subprocess against a private SQLite store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKERGATE_") and k != "CI"}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "BROKERGATE_STORE__URL": f"sqlite:///{tmp_path / 'cli.db'}",
            "BROKERGATE_STORE__SECRET_KEY": TEST_SECRET_KEY.decode(),
            "BROKERGATE_CA__PASSPHRASE": TEST_PASSPHRASE,
            "BROKERGATE_CA__CA_KEY_TYPE": "rsa2048",
        }
    )
    return env


@pytest.fixture
def run_cli(cli_env: dict[str, str], tmp_path: Path) -> CliRunner:
    """Run the real console entry point (``python -m brokergate``) in a subprocess."""

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "brokergate", *args],
            cwd=tmp_path,
            env={**cli_env, **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


# --- the CA (shared by the CA, gateway, logins and renewal tests) ---------------------------

TEST_SECRET_KEY = b"test-secret-key-0123456789abcdef"
TEST_PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def ca_settings() -> CASettings:
    # RSA-2048 CA keys keep the suite fast; the product default is RSA-3072.
    return CASettings(passphrase=TEST_PASSPHRASE, ca_key_type="rsa2048")


@pytest.fixture
def authority(
    sessions: sessionmaker[Session], clock: FakeClock, ca_settings: CASettings
) -> CertificateAuthority:
    """A CertificateAuthority on the parametrised store, generation 1 initialised."""
    ca = CertificateAuthority(
        settings=ca_settings,
        sessions=sessions,
        clock=clock,
        outbox_sealer=Sealer(secret=TEST_SECRET_KEY, purpose=OUTBOX_PURPOSE),
    )
    ca.init("test:setup")
    return ca


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsmToken]:
    """One real SoftHSM2 token for the session (tests/softhsm.py). Without softhsm2 the
    tests that need it skip with the reason, except under CI, where that is a failure."""
    module = softhsm_module()
    if module is None:
        reason = "softhsm2 not installed: 'make system-deps' (Debian package softhsm2)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    before = os.environ.get("SOFTHSM2_CONF")
    yield make_token(tmp_path_factory.mktemp("softhsm"), module)
    if before is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = before


@pytest.fixture
def token_ca_settings(softhsm_token: SoftHsmToken) -> CASettings:
    """CA settings with the CA keys in the SoftHSM2 token (no passphrase at all)."""
    return CASettings(
        key_store="pkcs11",
        pkcs11_module=softhsm_token.module,
        pkcs11_token_label=softhsm_token.label,
        pkcs11_pin=softhsm_token.pin,
        ca_key_type="rsa2048",
    )


UserFactory = Callable[..., User]


@pytest.fixture
def make_user(sessions: sessionmaker[Session], clock: FakeClock) -> UserFactory:
    """Create a broker: ``make_user(email="a@example.org", broker="60/123/4567")``."""
    counter = iter(range(1, 10_000))

    def make(
        email: str | None = None,
        broker: str | None = None,
        name: str = "Erika Mustermann",
        locale: str = "de",
    ) -> User:
        n = next(counter)
        with transaction(sessions) as session:
            return create_user(
                session,
                broker_number=broker or f"60/{100 + n:03d}/{4500 + n:04d}",
                email=email or f"broker{n}@example.org",
                name=name,
                locale=locale,
                now=clock(),
                actor="test:setup",
            )

    return make


def password_mail_for(sessions: sessionmaker[Session], serial: str) -> str:
    """The PKCS#12 password from the mail queued for certificate ``serial``."""
    with transaction(sessions) as session:
        rows = session.scalars(
            select(MailOutbox).where(MailOutbox.kind == "certificate_password")
        ).all()
        for row in rows:
            if row.context.get("serial") == serial:
                sealer = Sealer(secret=TEST_SECRET_KEY, purpose=OUTBOX_PURPOSE)
                return open_mail_secrets(row, sealer)["password"]
    raise AssertionError(f"no password mail queued for {serial}")


# --- headless Chromium (the browser tests; the driver helpers are tests/logins/web/chrome.py)

# Screenshots of the browser tests go to $BROKERGATE_SCREENSHOT_DIR (to look at them), else
# into the test's temporary folder.
SHOTS_ENV = "BROKERGATE_SCREENSHOT_DIR"


@pytest.fixture
def chromes() -> Iterator[list[Chrome]]:
    """The browsers a test started (append them); each is quit at the end of the test."""
    started: list[Chrome] = []
    yield started
    for chrome in started:
        chrome.close()


@pytest.fixture
async def screenshots(tmp_path: Path) -> Path:
    """Where a browser test saves its screenshots (the folder exists)."""
    shots = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    return shots


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs two pytest-xdist workers with ``--dist loadgroup``: each module's
    tests go to one worker in file order, so module-scoped fixtures (a running nginx, a
    gateway) start once, and the fault suite (tests/faults, one system shared by its
    modules, package scope) runs as one group. Without xdist the marks change nothing."""
    for item in items:
        relative = Path(item.path).resolve().relative_to(REPO / "tests")
        group = "faults" if relative.parts[0] == "faults" else relative.as_posix()
        item.add_marker(pytest.mark.xdist_group(group))
