"""The whole system as real processes on loopback, for the fault suite and the soak benchmark.

::

    with running_system(root, backend="postgresql") as system:   # or "sqlite"; front="nginx"
        a = system.start_gateway("a", workers=2)                  # brokergate gateway serve
        system.start_renewal()                                    # brokergate renewal run
        system.postgres.stop(); ...; system.postgres.start()      # a fault
        system.stop_upstream(); system.hang_upstream()            # the portal down / hanging

What runs: a PostgreSQL instance of our own (Debian's ``initdb``/``pg_ctl`` on a free port,
never the machine's shared server) or a SQLite file; the portal stand-in
(``tests.faults._upstream``) in its own process; an SMTP sink (aiosmtpd, a thread of the
caller) that receives the TAN mails the renewal process delivers; gateway replicas and the
renewal process as ``python -m brokergate`` subprocesses on one TOML file (per-replica ports
by environment variable). The store is prepared in-process with the packages' own API:
schema, CA, brokers with certificates (PEM files), passwords, broker numbers for TAN logins,
and one certificate revoked before anything starts.

``front="nginx"``: the same system in forward-auth mode. Each replica is a plain-HTTP
gateway (``forward_auth``, ``terminator_format = "nginx"``) with a real nginx of its own in
front, running the shipped deploy/nginx/forward-auth.conf (only its ADAPT lines changed,
tests/gateway_proxy/_nginx.py; the portal's timeouts as the gateway's below). nginx
terminates mTLS, proxies the portal itself and asks the gateway on every request; the
replica's ``url`` (and ``public_url``) is nginx's, ``gateway_url`` the gateway's own.

Used by ``tests/faults`` and ``bench/soak.py`` (the benchmark drives the same system).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

import psutil
from sqlalchemy import select

from ca import CASettings, create_user, load_trust_material, make_authority
from gateway.logins import hash_password
from store import (
    OUTBOX_PURPOSE,
    MailOutbox,
    RevocationReason,
    Sealer,
    User,
    make_engine,
    open_mail_secrets,
    session_factory,
    transaction,
    upgrade,
)
from tests import polling
from tests.conftest import REPO, TEST_PASSPHRASE, TEST_SECRET_KEY, free_port
from tests.gateway_proxy._certs import PemPair, own_ca_pair, pem_from_pkcs12
from tests.gateway_proxy._nginx import adapted_forward_auth_config, auth_cache, running_nginx
from tests.renewal.conftest import SmtpServer, SmtpSink

Front = Literal["standalone", "nginx"]
FRONTS: tuple[Front, ...] = ("standalone", "nginx")

PASSWORD = "correct horse battery staple"
ACTOR = "test:faults"
READY = " ready pid="  # a gateway worker's start line (gateway._serve)
START_TIMEOUT = 60.0  # a gateway start on a loaded 2-core machine: imports, TLS, store

# Timeouts the suite's assertions rely on (the config below sets them).
UPSTREAM_CONNECT_TIMEOUT = 2.0
UPSTREAM_READ_TIMEOUT = 3.0
TAN_RESEND_SECONDS = 1.0  # the gateway refuses a broker's next TAN within this (TooSoon)


def postgres_bin() -> Path | None:
    """Debian's server binaries (package ``postgresql``), the newest version installed."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """A PostgreSQL cluster of our own: initdb in a private folder, pg_ctl start/stop.

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres``
    system user (``runuser``) in a folder it owns; pytest's tmp_path is not traversable
    by that user (0700), hence a separate temporary folder, removed by :meth:`remove`.
    """

    def __init__(self, port: int) -> None:
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                "install Debian's 'postgresql' package (make system-deps)"
            )
        self.bin = bin_dir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="brokergate-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stderr}{done.stdout}\n{log}")

    def init(self) -> None:
        # trust on loopback only: a throw-away cluster that listens on 127.0.0.1 alone
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: open connections are terminated, as in a failover or a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True, kw_only=True)
class Broker:
    """A broker the load logs in as; ``cert`` for certificate SSO, else password or TAN."""

    user_id: int
    email: str
    broker_number: str
    cert: PemPair | None = None
    serial: str | None = None


@dataclass(kw_only=True)
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass(kw_only=True)
class Replica(Process):
    port: int  # the gateway's own listener
    metrics_port: int
    workers: int
    front: Process | None = None  # nginx in front (forward-auth mode)
    front_port: int | None = None

    @property
    def url(self) -> str:
        """Where brokers connect: the gateway itself, or the nginx in front of it."""
        return f"https://127.0.0.1:{self.front_port or self.port}"

    @property
    def gateway_url(self) -> str:
        """The gateway's own listener (a load balancer's /healthz check goes here)."""
        scheme = "http" if self.front is not None else "https"
        return f"{scheme}://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """The serving processes: the forked workers, or the process itself with one."""
        if self.workers == 1:
            return [self.proc.pid]
        return [child.pid for child in psutil.Process(self.proc.pid).children()]


@dataclass(kw_only=True)
class Mailbox:
    """The SMTP sink's messages, and the TAN of the last mail to an address."""

    sink: SmtpSink

    def tan_for(self, email: str, after: int, *, exclude: Collection[str] = ()) -> str | None:
        """The TAN of the newest mail to ``email`` since message ``after`` that is not in
        ``exclude`` (TANs already used), or None."""
        import re

        with self.sink.lock:
            messages = list(self.sink.messages[after:])
        for message in reversed(messages):
            if message["To"] and email in str(message["To"]):
                body = message.get_body(preferencelist=("plain",))
                text = str(body.get_content()) if body is not None else ""
                if (match := re.search(r"TAN: (\d{8})", text)) and match.group(1) not in exclude:
                    return match.group(1)
        return None

    def count(self) -> int:
        with self.sink.lock:
            return len(self.sink.messages)


@dataclass(kw_only=True)
class System:
    root: Path
    backend: Literal["postgresql", "sqlite"]
    front: Front
    store_url: str
    postgres: PostgresServer | None
    config_file: Path
    env: dict[str, str]
    server: PemPair
    ca_bundle: Path  # what `brokergate ca bundle` writes: nginx's CertificateRequest names
    upstream_port: int
    smtp: SmtpServer
    mailbox: Mailbox
    cert_brokers: list[Broker]
    password_brokers: list[Broker]
    tan_brokers: list[Broker]
    revoked: Broker  # revoked before anything starts
    spare: Broker  # a certificate broker the mix never uses (a test may revoke it)
    upstream: Process | None = None
    replicas: dict[str, Replica] = field(default_factory=dict)
    renewal: Process | None = None
    # What the load's TAN logins remember across tests (one system serves several): when
    # each broker last asked for a TAN (the gateway refuses another within
    # ``tan_resend_interval``) and the TANs already used (a mail the outbox delivers again
    # must not be taken for a later request's TAN, which voided it).
    tan_requested_at: dict[str, float] = field(default_factory=dict)
    tans_used: set[str] = field(default_factory=set)
    _hang: socket.socket | None = None
    _held: list[socket.socket] = field(default_factory=list)
    _fronts: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    # --- processes

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=out, cwd=self.root, env={**self.env, **(env or {})}
            )
        return Process(name=name, proc=proc, log=log)

    def start_upstream(self) -> None:
        self.release_upstream_hang()
        self.upstream = self._spawn(
            "upstream", [sys.executable, "-m", "tests.faults._upstream", str(self.upstream_port)]
        )
        wait_for_port(self.upstream_port, self.upstream)

    def stop_upstream(self) -> None:
        """The portal down: its process is killed, its port refuses connections."""
        if self.upstream is not None:
            self.upstream.proc.kill()
            self.upstream.proc.wait(10)

    def hang_upstream(self) -> None:
        """The portal hanging: connections are accepted and never answered."""
        self.stop_upstream()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.upstream_port))
        listener.listen(128)
        self._hang = listener

        def accept() -> None:
            while self._hang is listener:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                self._held.append(conn)  # kept open, never read, never answered

        threading.Thread(target=accept, daemon=True).start()

    def release_upstream_hang(self) -> None:
        listener, self._hang = self._hang, None
        if listener is not None:
            # shutdown wakes the thread blocked in accept(); close alone may not
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in self._held:
            conn.close()
        self._held.clear()

    def start_gateway(self, name: str, *, workers: int = 1) -> Replica:
        port, metrics_port = free_port(), free_port_run(workers)
        front_port = free_port() if self.front == "nginx" else None
        replica = self._serve(
            name, workers=workers, port=port, metrics_port=metrics_port, public=front_port or port
        )
        if front_port is not None:
            replica.front = self._start_nginx(name, gateway_port=port, listen_port=front_port)
            replica.front_port = front_port
        self.replicas[name] = replica
        return replica

    def restart_gateway(self, name: str) -> Replica:
        """``brokergate gateway serve`` of a replica that was killed, again on its ports; its
        nginx (forward-auth) stays as it was. Returns once every worker is ready."""
        old = self.replicas[name]
        if old.alive:
            raise AssertionError(f"gateway {name} is still running (pid {old.proc.pid})")
        replica = self._serve(
            name,
            workers=old.workers,
            port=old.port,
            metrics_port=old.metrics_port,
            public=old.front_port or old.port,
        )
        replica.front, replica.front_port = old.front, old.front_port
        self.replicas[name] = replica
        return replica

    def _serve(
        self, name: str, *, workers: int, port: int, metrics_port: int, public: int
    ) -> Replica:
        """``brokergate gateway serve`` on ``port``; brokers reach it on ``public`` (its own
        port, or its nginx's)."""
        env = {
            "BROKERGATE_GATEWAY__PORT": str(port),
            "BROKERGATE_GATEWAY__METRICS_PORT": str(metrics_port),
            "BROKERGATE_GATEWAY__PUBLIC_URL": f"https://127.0.0.1:{public}",
        }
        args = [sys.executable, "-m", "brokergate", "gateway", "serve", "--workers", str(workers)]
        log = self.root / f"gateway-{name}.log"
        ready_before = log.read_text(errors="replace").count(READY) if log.exists() else 0
        process = self._spawn(f"gateway-{name}", args, env)
        replica = Replica(
            name=process.name,
            proc=process.proc,
            log=process.log,
            port=port,
            metrics_port=metrics_port,
            workers=workers,
        )
        wait_for(
            lambda: replica.output.count(READY) >= ready_before + workers,
            START_TIMEOUT,
            f"{workers} worker(s) of gateway {name}",
            replica,
        )
        return replica

    def _start_nginx(self, name: str, *, gateway_port: int, listen_port: int) -> Process:
        """nginx with the shipped forward-auth config in front of one replica; stopped by
        :meth:`stop`. The portal's timeouts are the gateway's (as the config says to ADAPT)."""
        prefix = self.root / f"nginx-{name}"
        config = adapted_forward_auth_config(
            listen_port=listen_port,
            cert=self.server.cert,
            key=self.server.key,
            gateway_port=gateway_port,
            portal_port=self.upstream_port,
            cache=self._fronts.enter_context(auth_cache()),
            bundle=self.ca_bundle,
            portal_connect_timeout=UPSTREAM_CONNECT_TIMEOUT,
            portal_read_timeout=UPSTREAM_READ_TIMEOUT,
        )
        proc = self._fronts.enter_context(
            running_nginx(prefix, server_config=config, listen_port=listen_port)
        )
        return Process(name=f"nginx-{name}", proc=proc, log=prefix / "error.log")

    def start_renewal(self) -> None:
        renewal = self._spawn("renewal", [sys.executable, "-m", "brokergate", "renewal", "run"])
        wait_for(
            lambda: "renewal process started" in renewal.output,
            START_TIMEOUT,
            "the renewal process",
            renewal,
        )
        self.renewal = renewal

    # --- what the gateway processes hold

    def upstream_sockets(self, replica: Replica) -> Counter[str]:
        """TCP connections to the upstream, by state, of whoever proxies the portal: the
        replica's workers, or (forward-auth) the workers of the nginx in front of it."""
        states: Counter[str] = Counter()
        if replica.front is not None:
            nginx = psutil.Process(replica.front.proc.pid)
            pids = [nginx.pid, *(child.pid for child in nginx.children())]
        else:
            pids = replica.worker_pids()
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                for conn in psutil.Process(pid).net_connections(kind="tcp"):
                    if conn.raddr and conn.raddr.port == self.upstream_port:
                        states[conn.status] += 1
        return states

    @staticmethod
    def metric(replica: Replica, name: str, **labels: str) -> float:
        """A metric summed over the replica's workers (worker N: metrics_port + N)."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for index in range(replica.workers):
            url = f"http://127.0.0.1:{replica.metrics_port + index}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
                text = response.read().decode()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == name and all(
                        sample.labels.get(k) == v for k, v in labels.items()
                    ):
                        total += sample.value
        return total

    @staticmethod
    def rss(replica: Replica) -> int:
        """Resident memory of the replica's workers, bytes (summed)."""
        return sum(psutil.Process(pid).memory_info().rss for pid in replica.worker_pids())

    @staticmethod
    def fds(replica: Replica) -> int:
        """Open file descriptors of the replica's workers (summed)."""
        return sum(psutil.Process(pid).num_fds() for pid in replica.worker_pids())

    def processes(self) -> list[Process]:
        found: list[Process] = list(self.replicas.values())
        found.extend(r.front for r in self.replicas.values() if r.front is not None)
        if self.renewal is not None:
            found.append(self.renewal)
        return found

    def exited(self) -> list[str]:
        """Processes that have exited (each should run until the end)."""
        return [f"{p.name} ({p.proc.returncode})" for p in self.processes() if not p.alive]

    def stop(self) -> None:
        self._fronts.close()  # the nginx fronts first (they stop and are waited for)
        for process in [*self.processes(), *([self.upstream] if self.upstream else [])]:
            if process.alive:
                process.proc.send_signal(signal.SIGTERM)
        for process in [*self.processes(), *([self.upstream] if self.upstream else [])]:
            try:
                process.proc.wait(15)
            except subprocess.TimeoutExpired:
                process.proc.kill()
                process.proc.wait(10)
        self.release_upstream_hang()
        self.smtp.stop()

    # --- the store, from the test's side

    def revoke(self, broker: Broker) -> None:
        assert broker.serial is not None
        engine = make_engine(self.store_url)
        try:
            authority = make_authority(
                settings=CA_SETTINGS, sessions=session_factory(engine), secret_key=TEST_SECRET_KEY
            )
            authority.revoke(broker.serial, RevocationReason.KEY_COMPROMISE, ACTOR)
        finally:
            engine.dispose()


CA_SETTINGS = CASettings(passphrase=TEST_PASSPHRASE, ca_key_type="rsa2048")


def free_port_run(count: int) -> int:
    """A free port followed by ``count - 1`` free ones (worker N's metrics: port + N)."""
    for _ in range(50):  # bounded
        first = free_port()
        ok = True
        for offset in range(1, count):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", first + offset))
                except OSError:
                    ok = False
                    break
        if ok:
            return first
    raise RuntimeError(f"no {count} adjacent free loopback ports")


def wait_for(
    predicate: Callable[[], bool], seconds: float, what: str, process: Process | None = None
) -> None:
    """``tests.polling.wait_for`` that also fails at once when ``process`` exits (with its
    output), and adds the tail of its output to a timeout."""

    def probe() -> bool:
        if process is not None and not process.alive:
            raise AssertionError(
                f"{process.name} exited while waiting for {what}:\n{process.output}"
            )
        return predicate()

    try:
        polling.wait_for(probe, timeout=seconds, message=f"waiting for {what}")
    except AssertionError as exc:
        if process is None or not process.alive:
            raise
        raise AssertionError(f"{exc}\n{process.output[-3000:]}") from None


def wait_for_port(port: int, process: Process, seconds: float = 30) -> None:
    def open_() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(open_, seconds, f"port {port}", process)


def _config(
    system_root: Path, store_url: str, server: PemPair, upstream: int, smtp: int, front: Front
) -> str:
    secret = system_root / "secret-key"
    passphrase = system_root / "ca-passphrase"
    for path, value in ((secret, TEST_SECRET_KEY), (passphrase, TEST_PASSPHRASE.encode())):
        path.write_bytes(value)
        path.chmod(0o600)
    # forward-auth: plain HTTP on loopback, believing only nginx (docs/forward-auth.md)
    forward_auth = (
        'forward_auth = true\nterminator_format = "nginx"\ntrusted_proxies = ["127.0.0.1/32"]'
        if front == "nginx"
        else ""
    )
    return f"""
[store]
url = "{store_url}"
secret_key_file = "{secret}"

[ca]
passphrase_file = "{passphrase}"
ca_key_type = "rsa2048"

[gateway]
host = "127.0.0.1"
server_cert = "{server.cert}"
server_key = "{server.key}"
upstream_url = "http://127.0.0.1:{upstream}"
upstream_connect_timeout = "{UPSTREAM_CONNECT_TIMEOUT:g}s"
upstream_read_timeout = "{UPSTREAM_READ_TIMEOUT:g}s"
shutdown_grace = "5s"
default_level = "basic"
{forward_auth}

[[gateway.routes]]
prefix = "/public"
level = "anonymous"

[[gateway.routes]]
prefix = "/antrag"
level = "basic"

[[gateway.routes]]
prefix = "/vertrag"
level = "strong"

[[gateway.routes]]
prefix = "/ws"
level = "strong"

[logins]
tan_resend_interval = "{TAN_RESEND_SECONDS:g}s"
tan_mails_per_window = 100000

[mail]
smtp_host = "127.0.0.1"
smtp_port = {smtp}
tls = "none"
poll_interval = "1s"
retry_base = "1s"
retry_cap = "2s"
"""


def _prepare_store(
    store_url: str, certs: Path, *, cert_users: int, password_users: int, tan_users: int
) -> tuple[list[Broker], list[Broker], list[Broker], Broker, Broker]:
    engine = make_engine(store_url)
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        authority = make_authority(
            settings=CA_SETTINGS, sessions=sessions, secret_key=TEST_SECRET_KEY
        )
        authority.init(ACTOR)
        now = datetime.now(UTC)
        made: list[Broker] = []
        total = cert_users + 1 + password_users + tan_users + 1
        for n in range(total):
            with transaction(sessions) as db:
                user = create_user(
                    db,
                    broker_number=f"60/{100 + n:03d}/{4500 + n:04d}",
                    email=f"broker{n}@example.org",
                    name=f"Broker {n}",
                    locale=("de", "en", "nl")[n % 3],
                    now=now,
                    actor=ACTOR,
                )
                user.password_hash = hash_password(PASSWORD)
                made.append(Broker(user_id=user.id, email=user.email, broker_number=""))
        with transaction(sessions) as db:
            numbers = {u.id: u.organisation.broker_number for u in db.scalars(select(User))}
        made = [
            Broker(user_id=b.user_id, email=b.email, broker_number=numbers[b.user_id]) for b in made
        ]
        with_cert: list[Broker] = []
        for broker in [*made[: cert_users + 1], made[-1]]:
            issued = authority.issue_certificate(broker.user_id, ACTOR)
            password = _password_mail(sessions, issued.serial)
            pem = pem_from_pkcs12(certs, f"broker-{broker.user_id}", issued.pkcs12, password)
            with_cert.append(
                Broker(
                    user_id=broker.user_id,
                    email=broker.email,
                    broker_number=broker.broker_number,
                    cert=pem,
                    serial=issued.serial,
                )
            )
        revoked = with_cert.pop()
        spare = with_cert.pop()
        authority.revoke(revoked.serial or "", RevocationReason.KEY_COMPROMISE, ACTOR)
        return (
            with_cert,
            made[cert_users + 1 : cert_users + 1 + password_users],
            made[cert_users + 1 + password_users : -1],
            revoked,
            spare,
        )
    finally:
        engine.dispose()


def _password_mail(sessions: object, serial: str) -> str:
    with transaction(sessions) as db:  # type: ignore[arg-type]
        for row in db.scalars(select(MailOutbox).where(MailOutbox.kind == "certificate_password")):
            if row.context.get("serial") == serial:
                sealer = Sealer(secret=TEST_SECRET_KEY, purpose=OUTBOX_PURPOSE)
                return open_mail_secrets(row, sealer)["password"]
    raise AssertionError(f"no password mail for {serial}")


@contextlib.contextmanager
def running_system(
    root: Path,
    *,
    backend: Literal["postgresql", "sqlite"] = "postgresql",
    front: Front = "standalone",
    cert_users: int = 4,
    password_users: int = 3,
    tan_users: int = 3,
) -> Iterator[System]:
    """Store prepared, upstream and SMTP sink running; gateways (each with its nginx when
    ``front="nginx"``) and renewal are started by the caller. Everything is stopped (and the
    PostgreSQL cluster removed) on exit."""
    root.mkdir(parents=True, exist_ok=True)
    postgres: PostgresServer | None = None
    smtp = SmtpServer(port=free_port(), sink=SmtpSink())
    system: System | None = None
    try:
        if backend == "postgresql":
            postgres = PostgresServer(free_port())
            postgres.init()
            postgres.start()
            store_url = postgres.url
        else:
            store_url = f"sqlite:///{root / 'brokergate.db'}"
        server = own_ca_pair(root / "tls", "server", server=True)
        upstream_port = free_port()
        config_file = root / "brokergate.toml"
        config_file.write_text(_config(root, store_url, server, upstream_port, smtp.port, front))
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKERGATE_")}
        env.update({"PYTHONPATH": str(REPO), "BROKERGATE_CONFIG": str(config_file)})
        env.pop("CI", None)
        certs, passwords, tans, revoked, spare = _prepare_store(
            store_url,
            root / "certs",
            cert_users=cert_users,
            password_users=password_users,
            tan_users=tan_users,
        )
        ca_bundle = root / "ca-bundle.pem"
        engine = make_engine(store_url)
        try:
            with session_factory(engine)() as db:
                ca_bundle.write_bytes(load_trust_material(db).bundle_pem())
        finally:
            engine.dispose()
        smtp.start()
        system = System(
            root=root,
            backend=backend,
            front=front,
            store_url=store_url,
            postgres=postgres,
            config_file=config_file,
            env=env,
            server=server,
            ca_bundle=ca_bundle,
            upstream_port=upstream_port,
            smtp=smtp,
            mailbox=Mailbox(sink=smtp.sink),
            cert_brokers=certs,
            password_brokers=passwords,
            tan_brokers=tans,
            revoked=revoked,
            spare=spare,
        )
        system.start_upstream()
        yield system
    finally:
        if system is not None:
            system.stop()
        else:
            smtp.stop()
        if postgres is not None:
            postgres.remove()


def message_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    return str(body.get_content()) if body is not None else ""
