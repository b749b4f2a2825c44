"""First start (and every later one) of ``brokergate dev run``: make what is missing, reuse
the rest.

Order matters only where it must: secrets before the config that names them, the schema
before the CA, the CA before the demo broker's certificate. Every step checks what
exists first, so a second start creates nothing and a half-finished first start (Ctrl-C
during key generation) is completed by the next one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from brokergate._config import Config, ConfigError, load_config
from brokergate._dev._layout import DevLayout, DevPorts
from brokergate._dev._overlay import merge_sections, overlay_error, read_overlay, toml_value
from brokergate._dev._secrets import ensure_secret_file
from brokergate._dev._server_certs import ServerCertPaths, ensure_server_certificates
from ca import (
    CertificateAuthority,
    FirmSettings,
    UnknownCertificate,
    create_user,
    load_trust_material,
    make_authority,
)
from gateway import GatewaySettings
from store import (
    CAGeneration,
    Certificate,
    CertificateStatus,
    Clock,
    RevocationReason,
    User,
    make_engine,
    session_factory,
    transaction,
    upgrade,
)

ACTOR = "dev:bootstrap"
# The demo broker gets a new certificate when the old one is this close to expiry (or gone).
DEMO_RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True, kw_only=True)
class DemoUser:
    email: str
    broker_number: str
    name: str
    locale: str


# Two users: one with a certificate (single sign-on), one without (the fallback logins).
# German, as the portal is (DESIGN.md; issue 16: German pages led to English mails).
DEMO_BROKER = DemoUser(
    email="demo.broker@example.org", broker_number="60/000/0001", name="Demo Makler", locale="de"
)
FALLBACK_USER = DemoUser(
    email="no.certificate@example.org",
    broker_number="60/000/0002",
    name="Demo ohne Zertifikat",
    locale="de",
)


@dataclass(kw_only=True)
class DevState:
    """What the bootstrap made, kept in ``data/dev-state.json`` (no secrets in it)."""

    demo_serial: str | None = None
    demo_not_after: str | None = None
    password_mail: str | None = None  # relative path of the .eml, once the sink has it

    @classmethod
    def load(cls, path: Path) -> DevState:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        known = {
            k: data[k] for k in ("demo_serial", "demo_not_after", "password_mail") if k in data
        }
        return cls(**known)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        os.replace(tmp, path)


@dataclass(kw_only=True)
class BootstrapReport:
    """What happened; ``created`` lists what was made now (empty: everything reused)."""

    config: Config
    state: DevState
    created: list[str] = field(default_factory=list)
    overlay: Path | None = None  # the developer's settings file, if one was applied

    @property
    def first_start(self) -> bool:
        return bool(self.created)


def render_dev_config(
    layout: DevLayout,
    ports: DevPorts,
    overlay: Mapping[str, Mapping[str, Any]] | None = None,
    overlay_path: Path | None = None,
) -> str:
    """The TOML every dev process reads: embedded defaults plus paths and ports, with the
    developer's ``overlay`` (see :mod:`brokergate._dev._overlay`) laid over them.

    Secrets appear as ``*_file`` paths only (the loader refuses them inline).
    """
    gateway: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": ports.gateway,
        "server_cert": str(layout.server_cert),
        "server_key": str(layout.server_key),
        "upstream_url": ports.upstream_url,
        "public_url": ports.gateway_url,
    }
    # Settings that exist once the gateway's serving code is in (gw-proxy); written only then,
    # since the loader refuses unknown keys.
    known = GatewaySettings.__dataclass_fields__
    if "metrics_port" in known:
        gateway["metrics_port"] = ports.metrics
    if "shutdown_grace" in known:
        # A dev request is short; the supervisor's own bound (15 s) must be the longer one.
        gateway["shutdown_grace"] = "5s"
    sections: dict[str, dict[str, Any]] = {
        "store": {
            "url": layout.database_url,
            "secret_key_file": str(layout.secret_key_file),
        },
        # pkcs12_dir: `brokergate cert issue` against this system writes there (issue 16).
        "ca": {
            "passphrase_file": str(layout.ca_passphrase_file),
            "pkcs12_dir": str(layout.pkcs12_dir),
        },
        "gateway": gateway,
        "mail": {"smtp_host": "127.0.0.1", "smtp_port": ports.smtp, "tls": "none"},
    }
    lines = [
        "# Generated by `brokergate dev run` on every start; edits here are overwritten.",
        f"# Your own settings go into {layout.relative(layout.overlay_file)} (or --overlay FILE):",
        "# merged over these on every start, never written. Secrets are files next to this",
        "# one (mode 0600); see docs/configuration.md. For the CLI against this system:",
        f"#   export BROKERGATE_CONFIG={layout.config_file}",
    ]
    if overlay:
        lines.append(f"# Overlay applied: {overlay_path}")
        sections = merge_sections(sections, overlay)
    for section, values in sections.items():
        lines += ["", f"[{section}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def bootstrap(
    layout: DevLayout, ports: DevPorts, *, clock: Clock, overlay: Path | None = None
) -> BootstrapReport:
    """Make everything ``dev run`` needs that does not exist yet; reuse the rest.

    Args:
        overlay: the developer's settings file; ``None``: ``layout.overlay_file`` if it
            exists. Read (checked first, before anything is made), merged, never written.

    Raises:
        brokergate._config.ConfigError, ca.CAError, store.StoreError,
        brokergate._dev._secrets.DevSecretError: with a message naming the problem.
    """
    if overlay is None and layout.overlay_file.is_file():
        overlay = layout.overlay_file
    overlay_values = read_overlay(overlay) if overlay is not None else None
    created: list[str] = []
    for folder in (layout.data_dir, layout.mail_dir, layout.certs_dir, layout.pkcs12_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for private in (layout.data_dir, layout.mail_dir, layout.pkcs12_dir):
        # SECURITY: store, secrets, mails (passwords, TANs) and key files are private
        private.chmod(0o700)
    for secret in (layout.secret_key_file, layout.ca_passphrase_file):
        if ensure_secret_file(secret):
            created.append(layout.relative(secret))
    layout.config_file.write_text(render_dev_config(layout, ports, overlay_values, overlay))
    # env={}: the dev run is on embedded defaults; a BROKERGATE_* variable of the caller's
    # shell must not point it at another database or CA.
    try:
        config = load_config(layout.config_file, env={})
    except ConfigError as exc:
        if overlay is None:
            raise
        raise overlay_error(exc, overlay, layout.config_file) from None

    engine = make_engine(config.store.url)
    try:
        upgrade(engine)
        sessions = session_factory(engine)
        authority = make_authority(
            settings=config.ca,
            sessions=sessions,
            secret_key=config.store.secret_key,
            clock=clock,
        )
        with transaction(sessions) as session:
            initialised = bool(session.scalar(select(func.count()).select_from(CAGeneration)))
        if not initialised:
            authority.init(ACTOR)
            created.append("broker CA (root + issuing generation 1) in the store")

        now = clock()
        cert_paths = ServerCertPaths(
            ca_cert=layout.server_ca_cert,
            ca_key=layout.server_ca_key,
            cert=layout.server_cert,
            key=layout.server_key,
        )
        created += [layout.relative(p) for p in ensure_server_certificates(cert_paths, now=now)]

        with transaction(sessions) as session:
            bundle = load_trust_material(session).bundle_pem()
        if not layout.broker_ca_bundle.is_file() or layout.broker_ca_bundle.read_bytes() != bundle:
            layout.broker_ca_bundle.write_bytes(bundle)
            created.append(layout.relative(layout.broker_ca_bundle))

        for demo in (DEMO_BROKER, FALLBACK_USER):
            if _ensure_user(sessions, demo, now, config.firms):
                created.append(f"user {demo.email} (broker {demo.broker_number})")

        state = DevState.load(layout.state_file)
        if not _demo_certificate_usable(sessions, layout, state, now):
            issued = _issue_demo_certificate(sessions, layout, authority)
            if state.demo_serial is not None:
                _retire_old_demo_certificate(authority, state.demo_serial)
            state = DevState(
                demo_serial=issued[0], demo_not_after=issued[1].isoformat(), password_mail=None
            )
            created.append(f"{layout.relative(layout.demo_p12)} (certificate {issued[0]})")
        state.save(layout.state_file)
    finally:
        engine.dispose()
    return BootstrapReport(config=config, state=state, created=created, overlay=overlay)


def _ensure_user(
    sessions: sessionmaker[Session], demo: DemoUser, now: datetime, firms: FirmSettings
) -> bool:
    with transaction(sessions) as session:
        if session.scalar(select(User.id).where(User.email == demo.email)) is not None:
            return False
        create_user(
            session,
            broker_number=demo.broker_number,
            email=demo.email,
            name=demo.name,
            locale=demo.locale,
            now=now,
            actor=ACTOR,
            firms=firms,
        )
    return True


def _demo_certificate_usable(
    sessions: sessionmaker[Session], layout: DevLayout, state: DevState, now: datetime
) -> bool:
    """The PKCS#12 on disk still matches a valid certificate in the store.

    The file itself cannot be read without its password (the compat profile encrypts the
    certificate too), so the serial recorded at issuance is what ties file and row.
    """
    if state.demo_serial is None or not layout.demo_p12.is_file():
        return False
    with transaction(sessions) as session:
        row = session.scalar(select(Certificate).where(Certificate.serial == state.demo_serial))
        return (
            row is not None
            and row.status == CertificateStatus.VALID
            and row.not_after - DEMO_RENEW_BEFORE > now
        )


def _issue_demo_certificate(
    sessions: sessionmaker[Session], layout: DevLayout, authority: CertificateAuthority
) -> tuple[str, datetime]:
    """Issue the demo broker's certificate; the file is written inside the transaction.

    If writing fails the issuance (and its password mail) rolls back, as ``cert issue`` does.
    """
    tmp = layout.demo_p12.with_name(f".{layout.demo_p12.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        with transaction(sessions) as session:
            user_id = session.scalar(select(User.id).where(User.email == DEMO_BROKER.email))
            assert user_id is not None  # created just before
            issued = authority.issue_certificate(user_id, ACTOR, session=session)
            # SECURITY: the PKCS#12 holds the private key: 0600 from creation on.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(issued.pkcs12)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no file may outlive a rolled-back certificate
        raise
    os.replace(tmp, layout.demo_p12)
    return issued.serial, issued.not_after


def _retire_old_demo_certificate(authority: CertificateAuthority, serial: str) -> None:
    """The replaced demo certificate is revoked as superseded (its file is gone)."""
    try:
        authority.revoke(serial, RevocationReason.SUPERSEDED, ACTOR)
    except UnknownCertificate:
        pass  # the store was reset since: nothing to revoke
