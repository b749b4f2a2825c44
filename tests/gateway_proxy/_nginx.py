"""Run the shipped nginx configs with a real nginx on loopback (tests, bench, fault suite).

``adapted_config`` is deploy/nginx/brokergate.conf (terminator mode),
``adapted_forward_auth_config`` deploy/nginx/forward-auth.conf (forward-auth mode), each
with only its ADAPT lines changed; ``running_nginx`` runs one in the foreground.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port as free_port  # re-exported for the nginx tests
from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = REPO / "deploy" / "nginx" / "brokergate.conf"
FORWARD_AUTH_CONFIG = REPO / "deploy" / "nginx" / "forward-auth.conf"
UNAVAILABLE_PAGE = REPO / "deploy" / "nginx" / "brokergate-unavailable.html"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise AssertionError(f"deploy/nginx/brokergate.conf: {pattern!r} matched {count} times")
    return new


def adapted_config(*, listen_port: int, cert: Path, key: Path, gateway_port: int) -> str:
    """The shipped file with only its ADAPT lines changed to loopback test values."""
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    text = _replace_once(text, r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{listen_port} ssl;")
    text = _replace_once(text, r"^(\s*)ssl_certificate\s+\S+;", rf"\1ssl_certificate {cert};")
    text = _replace_once(
        text, r"^(\s*)ssl_certificate_key\s+\S+;", rf"\1ssl_certificate_key {key};"
    )
    text = _replace_once(
        text, r"^(\s*)server 127\.0\.0\.1:8443;", rf"\1server 127.0.0.1:{gateway_port};"
    )
    return text


def adapted_forward_auth_config(
    *,
    listen_port: int,
    cert: Path,
    key: Path,
    gateway_port: int,
    portal_port: int,
    cache: Path,
    bundle: Path,
    portal_connect_timeout: float = 2,
    portal_read_timeout: float = 1,
    gateway_read_timeout: float | None = None,
) -> str:
    """deploy/nginx/forward-auth.conf with only its ADAPT lines changed: loopback ports, the
    test's certificates, CA bundle and cache folder, the shipped fallback page, and the
    portal's timeouts (as ``gateway.upstream_*_timeout``) short enough for a test.
    ``gateway_read_timeout``: the bound on a hung brokergate (None: the shipped 20 s)."""
    text = FORWARD_AUTH_CONFIG.read_text(encoding="utf-8")
    text, count = re.subn(r"/etc/brokergate/tls/ca-bundle\.pem", str(bundle), text)
    if count != 2:  # ssl_client_certificate and ssl_trusted_certificate
        raise AssertionError(f"deploy/nginx/forward-auth.conf: the CA bundle named {count} times")
    replacements = [
        (r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{listen_port} ssl;"),
        (r"^(\s*)ssl_certificate\s+\S+;", rf"\1ssl_certificate {cert};"),
        (r"^(\s*)ssl_certificate_key\s+\S+;", rf"\1ssl_certificate_key {key};"),
        (r"^(\s*)server 127\.0\.0\.1:8443;", rf"\1server 127.0.0.1:{gateway_port};"),
        (r"^(\s*)server 127\.0\.0\.1:8080;", rf"\1server 127.0.0.1:{portal_port};"),
        (r"^proxy_cache_path \S+", f"proxy_cache_path {cache}"),
        (r"^(\s*)alias \S+brokergate-unavailable\.html;", rf"\1alias {UNAVAILABLE_PAGE};"),
        (
            r"^(\s*)proxy_connect_timeout 5s;",
            rf"\1proxy_connect_timeout {portal_connect_timeout:g}s;",
        ),
        (r"^(\s*)proxy_read_timeout 60s;", rf"\1proxy_read_timeout {portal_read_timeout:g}s;"),
    ]
    if gateway_read_timeout is not None:
        replacements.append(
            (r"^(\s*)proxy_read_timeout 20s;", rf"\1proxy_read_timeout {gateway_read_timeout:g}s;")
        )
    for pattern, replacement in replacements:
        new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count != 1:
            raise AssertionError(
                f"deploy/nginx/forward-auth.conf: {pattern!r} matched {count} times"
            )
        text = new
    return text


@contextmanager
def auth_cache() -> Iterator[Path]:
    """A folder for the decision cache that nginx's workers (user nobody when run as root)
    can write: not under pytest's tmp_path (mode 0700). Removed on exit."""
    path = Path(tempfile.mkdtemp(prefix="brokergate-auth-cache-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main_config(prefix: Path, *, include: Path, workers: int = 1, extra_http: str = "") -> str:
    return f"""
worker_processes {workers};
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    {extra_http}
    include {include};
}}
"""


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(listening, timeout=timeout, message=f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def running_nginx(
    prefix: Path,
    *,
    server_config: str,
    listen_port: int,
    workers: int = 1,
    cpu: int | None = None,
    extra_http: str = "",
) -> Iterator[subprocess.Popen[bytes]]:
    """nginx in the foreground with a private prefix; stopped (and waited for) on exit."""
    prefix.mkdir(parents=True, exist_ok=True)
    include = prefix / "brokergate.conf"
    include.write_text(server_config, encoding="utf-8")
    conf = prefix / "nginx.conf"
    conf.write_text(
        main_config(prefix, include=include, workers=workers, extra_http=extra_http),
        encoding="utf-8",
    )
    check = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, timeout=30
    )
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed: {check.stderr.decode()}")
    command = [NGINX, "-p", str(prefix), "-c", str(conf)]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    with (prefix / "stderr.log").open("wb") as stderr:
        proc = subprocess.Popen(command, stderr=stderr)
    try:
        try:
            wait_for_port(listen_port, proc)
        except RuntimeError as exc:
            log = (prefix / "stderr.log").read_text(errors="replace")
            raise RuntimeError(f"nginx did not start: {exc}\n{log}") from None
        yield proc
    finally:
        proc.terminate()  # SIGTERM: fast shutdown of master and workers
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
