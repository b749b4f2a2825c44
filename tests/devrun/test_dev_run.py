"""``brokergate dev run`` end to end: the real gateway and renewal processes on free loopback
ports, the demo broker's certificate through curl, and a clean stop on SIGINT / SIGTERM."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from brokergate._dev import DEMO_BROKER, FALLBACK_USER, DevPorts, DevState, read_mail
from tests.conftest import REPO
from tests.devrun._dev_process import (
    READY_TIMEOUT,
    STOP_TIMEOUT,
    DevRun,
    csrf_token,
    curl,
    form,
    needs_gateway_and_renewal,
    with_certificate,
    with_cookies,
)

pytestmark = [pytest.mark.slow, needs_gateway_and_renewal]
Starter = Callable[[Path, DevPorts], DevRun]


def test_dev_run_serves_the_demo_broker_and_stops_cleanly(
    tmp_path: Path, dev_run: Starter, free_ports: Callable[[], DevPorts]
) -> None:
    ports = free_ports()
    run = dev_run(tmp_path / "project", ports)
    layout = run.layout
    run.wait_ready()
    assert "[dev] created " in run.output and "demo-broker.p12" in run.output
    expected_curl = (
        "curl --cacert certs-dev/server-ca.pem --cert certs-dev/demo-broker.p12:PASSWORD "
        f"--cert-type P12 https://localhost:{ports.gateway}/"
    )
    assert expected_curl in run.output
    # The CLI is pointed at the running system the way the welcome text says (issue 16).
    export = f"export BROKERGATE_CONFIG={layout.config_file}"
    assert export in run.output
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("BROKERGATE_")}
    cli_env.update(PYTHONPATH=str(REPO), BROKERGATE_CONFIG=str(layout.config_file))
    listed = subprocess.run(
        [sys.executable, "-m", "brokergate", "user", "list"],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert DEMO_BROKER.email in listed.stdout and FALLBACK_USER.email in listed.stdout

    # The password travels the real way: outbox -> renewal -> SMTP -> sink -> .eml file.
    eml, password = run.demo_password()
    assert DevState.load(layout.state_file).password_mail == eml
    assert read_mail(run.project / eml)["To"] == DEMO_BROKER.email

    page = curl(layout, ports.gateway, *with_certificate(layout, password))
    assert page.returncode == 0, page.stderr
    assert "GET /portal/start" in page.stdout
    assert f"X-Brokergate-Email: {DEMO_BROKER.email}" in page.stdout
    assert f"X-Brokergate-Broker-Number: {DEMO_BROKER.broker_number}" in page.stdout
    assert "X-Brokergate-Method: certificate" in page.stdout
    assert "X-Brokergate-Level: strong" in page.stdout
    assert "Signed assertion (X-Brokergate-Assertion): verified (ES256" in page.stdout

    # Negative: without the certificate, or with a wrong password, no identity gets through.
    anonymous = curl(layout, ports.gateway)
    assert "X-Brokergate-Email" not in anonymous.stdout
    wrong = curl(layout, ports.gateway, *with_certificate(layout, "wrong-password"))
    assert wrong.returncode != 0
    assert "X-Brokergate-Email" not in wrong.stdout

    # Nothing secret on stdout except what the dev user is meant to read (the mail).
    for secret in (layout.secret_key_file, layout.ca_passphrase_file):
        assert secret.read_text().strip() not in run.output

    children = run.descendants()
    assert len(children) >= 2  # gateway (and its workers) and renewal
    assert run.stop(signal.SIGINT) == 0
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == [], f"left behind: {alive}"
    assert "[dev] stopped" in run.output
    assert "Traceback" not in run.output, run.output

    # Second start: everything is reused, the password mail is known, SIGTERM stops it too.
    p12 = layout.demo_p12.read_bytes()
    again = dev_run(run.project, ports)
    again.wait_ready()
    assert "[dev] created " not in again.output
    assert f"password mail:  {eml}" in again.output
    assert "shown above" not in again.output and "when it arrives" not in again.output
    assert layout.demo_p12.read_bytes() == p12
    page = curl(layout, ports.gateway, *with_certificate(layout, password))
    assert f"X-Brokergate-Email: {DEMO_BROKER.email}" in page.stdout
    children = again.descendants()
    assert again.stop(signal.SIGTERM) == 0
    _, alive = psutil.wait_procs(children, timeout=5)
    assert alive == []
    assert "Traceback" not in again.output, again.output


def _login_pages_present() -> bool:
    try:
        return importlib.util.find_spec("gateway.web._common") is not None
    except ModuleNotFoundError:  # gateway.logins itself is missing
        return False


@pytest.mark.skipif(
    not _login_pages_present(),
    reason="the login pages (gateway.web._common) are not on this branch yet",
)
def test_the_user_without_certificate_logs_in_by_tan(
    tmp_path: Path, dev_run: Starter, free_ports: Callable[[], DevPorts]
) -> None:
    """The fallback the welcome text names, as a browser would do it (curl + cookie jar):
    broker number + email, the TAN read from the mail sink's output."""
    run = dev_run(tmp_path / "project", free_ports())
    run.wait_ready()
    jar = tmp_path / "cookies.txt"
    layout, port = run.layout, run.ports.gateway
    assert f"{run.ports.gateway_url}/_gateway/login/broker" in run.output
    page = curl(layout, port, *with_cookies(jar), path="/_gateway/login/broker")
    assert page.returncode == 0, page.stderr
    assert 'action="/_gateway/login/broker"' in page.stdout, (
        "the gateway serves no broker-number login page: are the logins pages "
        "(gateway.logins setup_logins) wired into 'brokergate gateway serve'?"
    )
    sent = curl(
        layout,
        port,
        *with_cookies(jar),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        *form(
            csrf=csrf_token(page.stdout),
            next="/",
            broker=FALLBACK_USER.broker_number,
            email=FALLBACK_USER.email,
        ),
        path="/_gateway/login/broker",
    )
    assert sent.stdout.startswith("303 ") and sent.stdout.endswith("/_gateway/login/broker/tan")
    tan = run.wait_for(
        rf"\[mail\] to {re.escape(FALLBACK_USER.email)}:(?:.*\n)*?\[mail\] .*TAN: (\d+)", 60
    ).group(1)
    page = curl(layout, port, *with_cookies(jar), path="/_gateway/login/broker/tan")
    confirmed = curl(
        layout,
        port,
        *with_cookies(jar),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        *form(csrf=csrf_token(page.stdout), next="/portal/start", tan=tan),
        path="/_gateway/login/broker/tan",
    )
    assert confirmed.stdout == "303"
    portal = curl(layout, port, *with_cookies(jar))
    assert f"X-Brokergate-Email: {FALLBACK_USER.email}" in portal.stdout
    assert "X-Brokergate-Method: email-tan" in portal.stdout
    assert "X-Brokergate-Level: basic" in portal.stdout
    assert "verified (ES256" in portal.stdout
    # Issue 14: a TAN session proves only the mailbox, where the PKCS#12 password would go:
    # "Zertifikat herunterladen" is refused with a page that says to log in by password.
    account = curl(layout, port, *with_cookies(jar), path="/_gateway/account")
    p12 = tmp_path / "download.p12"
    downloaded = curl(
        layout,
        port,
        *with_cookies(jar),
        "-o",
        str(p12),
        "-w",
        "%{http_code} %{content_type}",
        *form(csrf=csrf_token(account.stdout)),
        path="/_gateway/account/certificate/download",
    )
    assert downloaded.stdout == "403 text/html; charset=utf-8", downloaded.stdout
    refused = p12.read_text()
    assert "Bitte mit Passwort anmelden" in refused
    assert "/_gateway/login/password" in refused
    assert "PKCS12" not in refused and "-----BEGIN" not in refused


def test_a_busy_port_is_reported_and_nothing_is_left_running(
    tmp_path: Path, dev_run: Starter, free_ports: Callable[[], DevPorts]
) -> None:
    ports = free_ports()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports.upstream))
        busy.listen()
        run = dev_run(tmp_path / "project", ports)
        code = run.proc.wait(READY_TIMEOUT)
        run.join_output()
    assert code == 1
    assert "cannot start" in run.output and "--upstream-port" in run.output
    assert "Traceback" not in run.output


def test_children_stop_even_when_the_supervisor_is_killed(
    tmp_path: Path, dev_run: Starter, free_ports: Callable[[], DevPorts]
) -> None:
    """kill -9 gives the supervisor no chance to clean up: the kernel's parent-death
    signal (PR_SET_PDEATHSIG) must stop the gateway and renewal anyway."""
    run = dev_run(tmp_path / "project", free_ports())
    run.wait_ready()
    children = run.descendants()
    assert children
    run.proc.kill()
    run.proc.wait(10)
    _, alive = psutil.wait_procs(children, timeout=STOP_TIMEOUT)
    assert alive == [], f"orphans: {alive}"
