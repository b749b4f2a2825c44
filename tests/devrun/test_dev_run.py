"""``brokergate dev run`` end to end: the real gateway and renewal processes on free loopback
ports, the demo broker's certificate through curl, and a clean stop on SIGINT / SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from brokergate.__main__ import build_parser
from brokergate._cli_reference import walk_commands
from brokergate._dev import DEMO_BROKER, DevLayout, DevPorts, DevState, read_mail, text_body
from tests.conftest import REPO

READY_TIMEOUT = 120.0  # first start: two RSA-3072 CA keys, then both children start
STOP_TIMEOUT = 30.0  # the supervisor gives each child 15 s before SIGKILL
PASSWORD = re.compile(r"(?:Password|Passwort|Wachtwoord):\s*(\S+)")

_COMMANDS = {path for path, _ in walk_commands(build_parser())}
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not {("gateway", "serve"), ("renewal", "run")} <= _COMMANDS,
        reason="'brokergate gateway serve' or 'renewal run' is not on this branch yet",
    ),
]


class DevRun:
    """One ``dev run`` process; its output is collected by a thread (the pipe never fills)."""

    def __init__(self, project: Path, ports: DevPorts) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKERGATE_")}
        env["PYTHONPATH"] = str(REPO)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "brokergate",
                "dev",
                "run",
                "--gateway-port",
                str(ports.gateway),
                "--upstream-port",
                str(ports.upstream),
                "--smtp-port",
                str(ports.smtp),
                "--metrics-port",
                str(ports.metrics),
            ],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout as out:  # closed when the process (and its children) end
            for line in out:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.output):
                return match
            if self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"dev run exited ({self.proc.returncode}):\n{self.output}")
            time.sleep(0.2)
        pytest.fail(f"no {pattern!r} within {timeout:.0f} s:\n{self.output}")

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(STOP_TIMEOUT)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            for child in self.descendants():
                child.kill()
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)


@pytest.fixture
def dev_run(tmp_path: Path) -> Iterator[Callable[[Path, DevPorts], DevRun]]:
    started: list[DevRun] = []

    def start(project: Path, ports: DevPorts) -> DevRun:
        run = DevRun(project, ports)
        started.append(run)
        return run

    yield start
    for run in started:  # a failed assertion must not leave processes behind
        run.kill()


def curl(layout: DevLayout, ports: DevPorts, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            str(layout.server_ca_cert),
            *extra,
            f"https://localhost:{ports.gateway}/portal/start",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_dev_run_serves_the_demo_broker_and_stops_cleanly(
    tmp_path: Path,
    dev_run: Callable[[Path, DevPorts], DevRun],
    free_ports: Callable[[], DevPorts],
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    layout = DevLayout.at(project)
    ports = free_ports()
    run = dev_run(project, ports)
    run.wait_for(r"\[dev\] ready: ", READY_TIMEOUT)
    assert "[dev] first start: created" in run.output
    expected_curl = (
        "curl --cacert certs-dev/server-ca.pem --cert certs-dev/demo-broker.p12:PASSWORD "
        f"--cert-type P12 https://localhost:{ports.gateway}/"
    )
    assert expected_curl in run.output

    # The password travels the real way: outbox -> renewal -> SMTP -> sink -> .eml file.
    match = run.wait_for(r"the demo broker's password mail is (\S+\.eml)", 60)
    eml = project / match.group(1)
    assert DevState.load(layout.state_file).password_mail == match.group(1)
    mail = read_mail(eml)
    assert mail["To"] == DEMO_BROKER.email
    found = PASSWORD.search(text_body(mail))
    assert found, text_body(mail)
    password = found.group(1)

    page = curl(layout, ports, "--cert", f"{layout.demo_p12}:{password}", "--cert-type", "P12")
    assert page.returncode == 0, page.stderr
    assert "GET /portal/start" in page.stdout
    assert f"X-Brokergate-Email: {DEMO_BROKER.email}" in page.stdout
    assert f"X-Brokergate-Broker-Number: {DEMO_BROKER.broker_number}" in page.stdout
    assert "X-Brokergate-Method: certificate" in page.stdout
    assert "X-Brokergate-Level: strong" in page.stdout
    assert "Signed assertion (X-Brokergate-Assertion): verified (ES256" in page.stdout

    # Negative: without the certificate, or with a wrong password, no identity gets through.
    anonymous = curl(layout, ports)
    assert "X-Brokergate-Email" not in anonymous.stdout
    wrong = curl(layout, ports, "--cert", f"{layout.demo_p12}:wrong-password", "--cert-type", "P12")
    assert wrong.returncode != 0
    assert "X-Brokergate-Email" not in wrong.stdout

    # Nothing secret on stdout except what the dev user is meant to read (the mail).
    for secret in (layout.secret_key_file, layout.ca_passphrase_file):
        assert secret.read_text().strip() not in run.output

    children = run.descendants()
    assert len(children) >= 2  # gateway (and its workers) and renewal
    assert run.stop(signal.SIGINT) == 0
    _gone, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"left behind: {alive}"
    assert "[dev] stopped" in run.output
    assert "Traceback" not in run.output, run.output

    # Second start: everything is reused, the password mail is known, SIGTERM stops it too.
    p12 = layout.demo_p12.read_bytes()
    again = dev_run(project, ports)
    again.wait_for(r"\[dev\] ready: ", READY_TIMEOUT)
    assert "first start" not in again.output
    assert f"password mail:  {match.group(1)}" in again.output
    assert layout.demo_p12.read_bytes() == p12
    page = curl(layout, ports, "--cert", f"{layout.demo_p12}:{password}", "--cert-type", "P12")
    assert f"X-Brokergate-Email: {DEMO_BROKER.email}" in page.stdout
    children = again.descendants()
    assert again.stop(signal.SIGTERM) == 0
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert "Traceback" not in again.output, again.output


def test_a_busy_port_is_reported_and_nothing_is_left_running(
    tmp_path: Path,
    dev_run: Callable[[Path, DevPorts], DevRun],
    free_ports: Callable[[], DevPorts],
) -> None:
    import socket

    project = tmp_path / "project"
    project.mkdir()
    ports = free_ports()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports.upstream))
        busy.listen()
        run = dev_run(project, ports)
        code = run.proc.wait(READY_TIMEOUT)
        run._reader.join(5)
    assert code == 1
    assert "cannot start" in run.output and "--upstream-port" in run.output
    assert "Traceback" not in run.output


def test_children_stop_even_when_the_supervisor_is_killed(
    tmp_path: Path,
    dev_run: Callable[[Path, DevPorts], DevRun],
    free_ports: Callable[[], DevPorts],
) -> None:
    """kill -9 gives the supervisor no chance to clean up: the kernel's parent-death
    signal (PR_SET_PDEATHSIG) must stop the gateway and renewal anyway."""
    project = tmp_path / "project"
    project.mkdir()
    run = dev_run(project, free_ports())
    run.wait_for(r"\[dev\] ready: ", READY_TIMEOUT)
    children = run.descendants()
    assert children
    run.proc.kill()
    run.proc.wait(10)
    _, alive = psutil.wait_procs(children, timeout=STOP_TIMEOUT)
    assert alive == [], f"orphans: {alive}"
