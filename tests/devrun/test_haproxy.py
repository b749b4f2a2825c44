"""deploy/haproxy/haproxy.cfg, run as shipped (only the ADAPT lines changed) in front of a
real gateway: the client certificate survives the L4 passthrough, and the gateway sees the
client's own address through the PROXY protocol (``send-proxy-v2``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from brokergate._dev import DEMO_BROKER, DevLayout, DevPorts
from tests.conftest import REPO
from tests.devrun._dev_process import DevRun, curl, needs_gateway_and_renewal, with_certificate
from tests.devrun.conftest import free_port
from tests.polling import wait_for
from tests.tls_scan import profile_violations, scan

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
                _, name, _address, *options = stripped.split()
                line = f"    server {name} 127.0.0.1:{gateway} {' '.join(options)}"
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
    servers = [line for line in text.splitlines() if line.strip().startswith("server ")]
    assert servers and all("send-proxy-v2" in line for line in servers)
    assert "proxy_protocol = true" in text and "trusted_proxies" in text  # the gateways' side


def behind_haproxy(layout: DevLayout, *, port: int) -> Path:
    """The dev run's gateway configuration for a second gateway on ``port`` that expects
    PROXY headers from HAProxy (which connects from 127.0.0.1), without /metrics."""
    text = layout.config_file.read_text()
    text = re.sub(r"(?m)^port = \d+$", f"port = {port}", text)
    text = re.sub(r"(?m)^metrics_port = \d+$", "metrics_port = 0", text)
    text = text.replace(
        "[gateway]\n", '[gateway]\nproxy_protocol = true\ntrusted_proxies = ["127.0.0.1/32"]\n'
    )
    config = layout.data_dir / "gateway-behind-haproxy.toml"
    config.write_text(text)
    return config


def _stop(procs: list[subprocess.Popen[bytes]], *, grace: float) -> None:
    """SIGTERM each process, SIGKILL after ``grace`` seconds; close any stderr pipe."""
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


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
    _stop(procs, grace=10)


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Callable[[Path, Path], subprocess.Popen[bytes]]]:
    """``brokergate --config FILE gateway serve`` in the project folder, stopped after."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(project: Path, config: Path) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKERGATE_")}
        env["PYTHONPATH"] = str(REPO)
        command = [sys.executable, "-m", "brokergate", "--config", str(config)]
        with (tmp_path / "gateway-behind-haproxy.log").open("wb") as log:
            proc = subprocess.Popen(
                [*command, "gateway", "serve"], cwd=project, env=env, stdout=log, stderr=log
            )
        procs.append(proc)
        return proc

    yield start
    _stop(procs, grace=15)


@pytest.mark.slow
@needs_gateway_and_renewal
def test_client_certificate_and_address_pass_through_haproxy(
    tmp_path: Path,
    dev_run: Callable[[Path, DevPorts], DevRun],
    free_ports: Callable[[], DevPorts],
    haproxy: Callable[[Path], subprocess.Popen[bytes]],
    gateway_process: Callable[[Path, Path], subprocess.Popen[bytes]],
) -> None:
    ports = free_ports()
    run = dev_run(tmp_path / "project", ports)
    run.wait_ready()
    _, password = run.demo_password()
    # A second gateway on the dev run's store and upstream, behind HAProxy with the PROXY
    # protocol (the dev run's own gateway answers the dev supervisor's plain checks).
    gateway_port, listen = free_port(), free_port()
    log = tmp_path / "gateway-behind-haproxy.log"
    gateway = gateway_process(run.project, behind_haproxy(run.layout, port=gateway_port))

    def gateway_log() -> str:
        text = log.read_text() if log.exists() else ""
        assert gateway.poll() is None, text
        return text

    wait_for(
        gateway_log,
        until=lambda text: "worker 0 ready" in text,
        timeout=60,
        interval=0.2,
        message="the gateway behind HAProxy did not start",
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(adapted(run.layout, listen=listen, gateway=gateway_port))
    proc = haproxy(config)

    # The broker connects from 127.0.0.2; HAProxy connects to the gateway from 127.0.0.1.
    broker = ("--interface", "127.0.0.2")

    def through_haproxy() -> subprocess.CompletedProcess[str]:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        return curl(run.layout, listen, *broker, *with_certificate(run.layout, password))

    page = wait_for(
        through_haproxy,
        until=lambda page: page.returncode == 0,
        timeout=30,
        interval=0.5,
        message="no page through HAProxy",
    )
    assert f"X-Brokergate-Email: {DEMO_BROKER.email}" in page.stdout
    assert "X-Brokergate-Method: certificate" in page.stdout
    assert "verified (ES256" in page.stdout
    # The upstream is told the broker's address, not HAProxy's; a header the broker sends
    # itself is not believed (HAProxy relays TCP only, it cannot vouch for HTTP headers).
    assert "Client address (X-Forwarded-For): 127.0.0.2\n" in page.stdout, page.stdout
    forged = curl(
        run.layout,
        listen,
        *broker,
        *with_certificate(run.layout, password),
        *("-H", "X-Forwarded-For: 10.9.9.9"),
    )
    assert "Client address (X-Forwarded-For): 127.0.0.2\n" in forged.stdout, forged.stdout
    # TLS through the balancer is the gateway's own, to Mozilla's intermediate profile; so is
    # the dev run's `gateway serve` scanned directly (issue 16, point 10).
    assert profile_violations(scan(listen)) == []
    assert profile_violations(scan(ports.gateway)) == []
    # Negative: through the same balancer, no certificate means no identity.
    anonymous = curl(run.layout, listen, *broker)
    assert "X-Brokergate-Email" not in anonymous.stdout
    # SECURITY: a broker that skips the balancer gets no TLS from this gateway at all.
    direct = curl(run.layout, gateway_port, *broker)
    assert direct.returncode != 0
    output = log.read_text()
    assert "closed a connection from 127.0.0.2 before TLS" in output
    # HAProxy's health checks (PROXY LOCAL) were accepted: no complaint about 127.0.0.1.
    assert "closed a connection from 127.0.0.1" not in output
