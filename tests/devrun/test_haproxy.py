"""deploy/haproxy/haproxy.cfg, run as shipped (only the ADAPT lines changed) in front of a
real gateway: the client certificate survives the L4 passthrough."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from brokergate._dev import DEMO_BROKER, DevLayout, DevPorts
from tests.conftest import REPO
from tests.devrun._dev_process import DevRun, curl, needs_gateway_and_renewal, with_certificate
from tests.devrun.conftest import free_port

SHIPPED = REPO / "deploy" / "haproxy" / "haproxy.cfg"


def adapted(layout: DevLayout, *, listen: int, gateway: int) -> str:
    """The shipped file with its ADAPT lines pointed at this test's loopback ports."""
    lines = []
    for line in SHIPPED.read_text().splitlines():
        if "# ADAPT" in line:
            stripped = line.split("#", 1)[0].strip()
            if stripped.startswith("maxconn "):
                line = "    maxconn 1000"  # within any test machine's file descriptor limit
            elif stripped.startswith("bind "):
                line = f"    bind 127.0.0.1:{listen}"
            elif stripped.startswith("default-server "):
                line = "    " + stripped.replace(
                    "/etc/haproxy/brokergate-server-ca.pem", str(layout.server_ca_cert)
                )
            elif stripped.startswith("server "):
                name = stripped.split()[1]
                line = f"    server {name} 127.0.0.1:{gateway}"
            else:
                raise AssertionError(f"unexpected ADAPT line: {line}")
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_only_marked_lines_are_site_specific() -> None:
    text = SHIPPED.read_text()
    assert "mode tcp" in text  # passthrough: HAProxy must not terminate TLS
    assert "mode http" not in text
    assert "ssl crt" not in text  # no certificate on HAProxy's own bind line
    assert sum("# ADAPT" in line for line in text.splitlines()) == 5


@pytest.fixture
def haproxy() -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(binary).exists(), "haproxy is missing: `make system-deps` installs it"
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: Path) -> subprocess.Popen[bytes]:
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        proc = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.slow
@needs_gateway_and_renewal
def test_client_certificate_passes_through_haproxy(
    tmp_path: Path,
    dev_run: Callable[[Path, DevPorts], DevRun],
    free_ports: Callable[[], DevPorts],
    haproxy: Callable[[Path], subprocess.Popen[bytes]],
) -> None:
    ports = free_ports()
    run = dev_run(tmp_path / "project", ports)
    run.wait_ready()
    _, password = run.demo_password()
    listen = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(adapted(run.layout, listen=listen, gateway=ports.gateway))
    proc = haproxy(config)

    deadline = time.monotonic() + 30
    page = curl(run.layout, listen, *with_certificate(run.layout, password))
    while page.returncode != 0 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.5)
        page = curl(run.layout, listen, *with_certificate(run.layout, password))
    assert page.returncode == 0, page.stderr
    assert f"X-Brokergate-Email: {DEMO_BROKER.email}" in page.stdout
    assert "X-Brokergate-Method: certificate" in page.stdout
    assert "verified (ES256" in page.stdout
    # Negative: through the same balancer, no certificate means no identity.
    anonymous = curl(run.layout, listen)
    assert "X-Brokergate-Email" not in anonymous.stdout
