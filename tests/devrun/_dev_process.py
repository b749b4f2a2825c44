"""A ``brokergate dev run`` subprocess for tests, and what they do with it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from brokergate.__main__ import build_parser
from brokergate._cli_reference import walk_commands
from brokergate._dev import DevLayout, DevPorts, read_mail, text_body
from tests.conftest import REPO
from tests.polling import wait_for

READY_TIMEOUT = 120.0  # first start: two RSA-3072 CA keys, then both children start
STOP_TIMEOUT = 30.0  # the supervisor gives each child 15 s before SIGKILL
PASSWORD = re.compile(r"(?:Password|Passwort|Wachtwoord):\s*(\S+)")

_COMMANDS = {path for path, _ in walk_commands(build_parser())}
# The gateway and renewal entry points come from their own branches; until they are merged
# the end-to-end tests say so instead of failing on a missing command.
needs_gateway_and_renewal = pytest.mark.skipif(
    not {("gateway", "serve"), ("renewal", "run")} <= _COMMANDS,
    reason="'brokergate gateway serve' or 'renewal run' is not on this branch yet",
)


class DevRun:
    """One ``dev run`` process; its output is collected by a thread (the pipe never fills)."""

    def __init__(self, project: Path, ports: DevPorts) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKERGATE_")}
        env["PYTHONPATH"] = str(REPO)
        self.project = project
        self.ports = ports
        self.layout = DevLayout.at(project)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "brokergate", "dev", "run"),
                *("--gateway-port", str(ports.gateway), "--upstream-port", str(ports.upstream)),
                *("--smtp-port", str(ports.smtp), "--metrics-port", str(ports.metrics)),
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

        def search() -> re.Match[str] | None:
            match = re.search(pattern, self.output)
            if match is None and self.proc.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"dev run exited ({self.proc.returncode}):\n{self.output}")
            return match

        try:
            found = wait_for(search, timeout=timeout, interval=0.2, message=f"no {pattern!r}")
        except AssertionError as exc:
            pytest.fail(f"{exc}:\n{self.output}")
        assert found is not None
        return found

    def wait_ready(self) -> None:
        self.wait_for(r"\[dev\] ready: ", READY_TIMEOUT)

    def demo_password(self) -> tuple[str, str]:
        """(relative .eml path, password) of the demo broker's password mail."""
        match = self.wait_for(r"the demo broker's password mail is (\S+\.eml)", 60)
        found = PASSWORD.search(text_body(read_mail(self.project / match.group(1))))
        assert found, f"no password in {match.group(1)}"
        return match.group(1), found.group(1)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(STOP_TIMEOUT)
        self._reader.join(5)
        return code

    def join_output(self) -> None:
        self._reader.join(10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            for child in self.descendants():
                child.kill()
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)


def curl(
    layout: DevLayout, port: int, *extra: str, path: str = "/portal/start"
) -> subprocess.CompletedProcess[str]:
    """curl against https://localhost:PORT trusting the dev server CA."""
    return subprocess.run(
        [
            *("curl", "-sS", "--max-time", "20", "--cacert", str(layout.server_ca_cert)),
            *extra,
            f"https://localhost:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def with_cookies(jar: Path) -> tuple[str, ...]:
    return ("-c", str(jar), "-b", str(jar))


def csrf_token(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, f"no CSRF field in:\n{page}"
    return match.group(1)


def form(**fields: str) -> tuple[str, ...]:
    return tuple(arg for k, v in fields.items() for arg in ("--data-urlencode", f"{k}={v}"))


def with_certificate(layout: DevLayout, password: str) -> tuple[str, ...]:
    return ("--cert", f"{layout.demo_p12}:{password}", "--cert-type", "P12")
