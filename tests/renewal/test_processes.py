"""Real ``brokergate renewal run`` processes against one database and one SMTP sink.

* two processes over the same due set: each mail arrives exactly once;
* a process killed with SIGKILL in the middle of a batch, then restarted: no mail is lost
  and none arrives twice.

Counted at the SMTP sink (aiosmtpd on loopback), not in the database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from store import (
    OUTBOX_PURPOSE,
    MailOutbox,
    MailStatus,
    Sealer,
    queue_mail,
    system_clock,
    transaction,
)
from tests.conftest import REPO, TEST_SECRET_KEY
from tests.polling import wait_for
from tests.renewal.conftest import SmtpServer

pytestmark = pytest.mark.slow

TEMPLATES = [
    ("email_tan", {}, {"tan": "QWERTZ"}),
    (
        "certificate_password",
        {
            "name": "Erika",
            "serial": "ab",
            "not_after": "2028-11-25",
            "friendly_name": "Erika (60/123/4567) 2028-11-25",
            "broker_number": "60/123/4567",
        },
        {"password": "tiger-lamp-7731-orbit"},
    ),
    ("activation", {"name": "Jan"}, {"link": "https://portal.example.test/_gateway/activate?t=1"}),
]


def queue_many(sessions: sessionmaker[Session], n: int) -> list[int]:
    """Queue ``n`` mails due now by the real clock (the processes run on the real clock)."""
    now = system_clock() - timedelta(seconds=1)
    sealer = Sealer(secret=TEST_SECRET_KEY, purpose=OUTBOX_PURPOSE)
    ids = []
    with transaction(sessions) as session:
        for i in range(n):
            template, context, secrets = TEMPLATES[i % len(TEMPLATES)]
            ids.append(
                queue_mail(
                    session,
                    kind=template,
                    to_addr=f"broker{i}@example.org",
                    locale="de",
                    template=template,
                    context=context,
                    secrets=secrets,
                    sealer=sealer,
                    now=now,
                ).id
            )
    return ids


def counts(sessions: sessionmaker[Session]) -> dict[MailStatus, int]:
    with transaction(sessions) as session:
        rows = session.execute(
            select(MailOutbox.status, func.count()).group_by(MailOutbox.status)
        ).all()
    return {MailStatus(s): int(n) for s, n in rows}


ProcessStarter = Callable[[str], subprocess.Popen[bytes]]


@pytest.fixture
def start_renewal(
    engine: Engine, smtp_server: SmtpServer, cli_env: dict[str, str], tmp_path: Path
) -> Iterator[ProcessStarter]:
    """Start ``python -m brokergate renewal run`` on the test database and sink."""
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **cli_env,
        "PYTHONPATH": str(REPO),
        "BROKERGATE_STORE__URL": engine.url.render_as_string(hide_password=False),
        "BROKERGATE_MAIL__SMTP_PORT": str(smtp_server.port),
        "BROKERGATE_MAIL__POLL_INTERVAL": "1s",
        "BROKERGATE_MAIL__BATCH_SIZE": "4",
        "BROKERGATE_MAIL__TIMEOUT": "5s",
        "BROKERGATE_MAIL__FROM_ADDR": "no-reply@portal.example.test",
    }

    def start(name: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "brokergate", "renewal", "run"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=60)


def test_two_processes_deliver_each_mail_exactly_once(
    sessions: sessionmaker[Session],
    smtp_server: SmtpServer,
    start_renewal: ProcessStarter,
    tmp_path: Path,
) -> None:
    n = 120
    smtp_server.sink.rcpt_delay = 0.03  # a server that takes its time: both workers get work
    a, b = start_renewal("a"), start_renewal("b")
    # Both must be up before the mails appear, or a slow start would leave one idle.
    wait_for(
        lambda: all("started as worker" in (tmp_path / f"{p}.log").read_text() for p in ("a", "b")),
        timeout=60,
        message="both renewal processes did not start",
    )
    ids = queue_many(sessions, n)
    wait_for(
        lambda: counts(sessions).get(MailStatus.SENT, 0),
        until=lambda sent: sent == n,
        timeout=120,
        message=f"not all {n} mails sent",
    )
    assert stop(a) == 0 and stop(b) == 0, (tmp_path / "a.log").read_text()
    received = smtp_server.sink.message_ids()
    assert len(received) == n, "a mail arrived twice or not at all"
    assert len(set(received)) == n
    with transaction(sessions) as session:
        rows = session.scalars(select(MailOutbox).where(MailOutbox.id.in_(ids))).all()
        assert {r.message_id for r in rows} == set(received)
        assert all(r.secret_sealed is None and r.status is MailStatus.SENT for r in rows)
        workers = {r.claimed_by.split(":")[1] for r in rows if r.claimed_by}
    assert workers == {str(a.pid), str(b.pid)}, "both processes should have delivered a share"
    for name in ("a", "b"):
        log = (tmp_path / f"{name}.log").read_text()
        assert "renewal process stopped" in log
        assert "QWERTZ" not in log and "tiger-lamp" not in log  # secrets never logged


def test_kill_9_mid_batch_then_restart_loses_nothing_and_doubles_nothing(
    sessions: sessionmaker[Session],
    smtp_server: SmtpServer,
    start_renewal: ProcessStarter,
    tmp_path: Path,
) -> None:
    n = 14
    queue_many(sessions, n)
    sink = smtp_server.sink
    sink.rcpt_delay = 0.2
    first = start_renewal("first")
    wait_for(
        lambda: len(sink.messages),
        until=lambda sent: sent >= 3,
        timeout=60,
        message="no first deliveries",
    )
    # Kill while the server is busy with the next mail's RCPT: mid-batch, mid-send.
    sink.rcpt_started.clear()
    assert sink.rcpt_started.wait(timeout=30)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    delivered_before = len(sink.messages)
    with transaction(sessions) as session:
        stranded = session.scalar(
            select(func.count()).where(
                MailOutbox.status == MailStatus.PENDING,
                MailOutbox.claimed_by.like(f"%:{first.pid}:%"),
            )
        )
    assert stranded and stranded >= 1, "the kill should leave claimed, unsent mails behind"
    assert delivered_before < n

    sink.rcpt_delay = 0.0
    second = start_renewal("second")
    wait_for(
        lambda: counts(sessions).get(MailStatus.SENT, 0),
        until=lambda sent: sent == n,
        timeout=60,
        message="the restarted process did not deliver the rest",
    )
    assert stop(second) == 0
    received = sink.message_ids()
    assert len(received) == n and len(set(received)) == n
    log = (tmp_path / "second.log").read_text()
    assert "left by a dead process on this host" in log
