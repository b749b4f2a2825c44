"""The dev bootstrap: creates everything once, reuses it afterwards, keeps secrets private."""

from __future__ import annotations

import stat
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from brokergate._config import load_config
from brokergate._dev import (
    DEMO_BROKER,
    FALLBACK_USER,
    DevLayout,
    DevPorts,
    DevSecretError,
    DevState,
    ServerCertPaths,
    bootstrap,
    ensure_secret_file,
    ensure_server_certificates,
    render_dev_config,
)
from store import (
    Certificate,
    CertificateStatus,
    MailOutbox,
    User,
    make_engine,
    session_factory,
    transaction,
)
from tests.conftest import FakeClock

PORTS = DevPorts(gateway=18443, upstream=18080, smtp=18025, metrics=0)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(layout: DevLayout) -> dict[str, bytes]:
    """Every file bootstrap keeps (not the database or the regenerated config)."""
    names = [
        layout.secret_key_file,
        layout.ca_passphrase_file,
        layout.server_ca_cert,
        layout.server_ca_key,
        layout.server_cert,
        layout.server_key,
        layout.broker_ca_bundle,
        layout.demo_p12,
        layout.state_file,
    ]
    return {layout.relative(p): p.read_bytes() for p in names}


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevLayout, FakeClock, list[str]]:
    """One bootstrapped project (RSA CA keys take a few seconds: made once per module)."""
    from datetime import UTC, datetime

    clock = FakeClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    layout = DevLayout.at(tmp_path_factory.mktemp("dev") / "project")
    report = bootstrap(layout, PORTS, clock=clock)
    return layout, clock, report.created


def test_first_start_creates_everything(first: tuple[DevLayout, FakeClock, list[str]]) -> None:
    layout, _, created = first
    text = "\n".join(created)
    for expected in (
        "data/secret-key",
        "data/ca-passphrase",
        "broker CA",
        "server.pem",
        "server-key.pem",
        "server-ca.pem",
        "broker-ca-bundle.pem",
        DEMO_BROKER.email,
        FALLBACK_USER.email,
        "demo-broker.p12",
    ):
        assert expected in text
    engine = make_engine(layout.database_url)
    try:
        with transaction(session_factory(engine)) as session:
            emails = set(session.scalars(select(User.email)))
            assert {DEMO_BROKER.email, FALLBACK_USER.email} <= emails
            (cert,) = session.scalars(select(Certificate)).all()
            assert cert.status == CertificateStatus.VALID
            assert cert.serial == DevState.load(layout.state_file).demo_serial
            mails = session.scalars(select(MailOutbox)).all()
            assert [m.kind for m in mails] == ["certificate_password"]
            assert mails[0].to_addr == DEMO_BROKER.email
    finally:
        engine.dispose()


def test_private_files_are_0600_and_folders_0700(
    first: tuple[DevLayout, FakeClock, list[str]],
) -> None:
    layout, _, _ = first
    for path in (
        layout.secret_key_file,
        layout.ca_passphrase_file,
        layout.server_key,
        layout.server_ca_key,
        layout.demo_p12,
    ):
        assert mode(path) == 0o600, path
    assert mode(layout.data_dir) == 0o700
    assert mode(layout.mail_dir) == 0o700
    assert mode(layout.server_cert) & 0o077 != 0o077  # public: readable is fine, not required


def test_second_start_reuses_everything(first: tuple[DevLayout, FakeClock, list[str]]) -> None:
    layout, clock, _ = first
    before = snapshot(layout)
    clock.advance(timedelta(days=1))
    report = bootstrap(layout, PORTS, clock=clock)
    assert report.created == []
    assert not report.first_start
    assert snapshot(layout) == before


def test_the_config_names_secret_files_but_holds_no_secret(
    first: tuple[DevLayout, FakeClock, list[str]],
) -> None:
    layout, _, _ = first
    text = layout.config_file.read_text()
    for secret in (layout.secret_key_file, layout.ca_passphrase_file):
        value = secret.read_text().strip()
        assert len(value) >= 32
        assert value not in text
        assert str(secret) in text
    config = load_config(layout.config_file, env={})
    assert config.store.secret_key == layout.secret_key_file.read_bytes().strip()
    assert config.ca.passphrase == layout.ca_passphrase_file.read_text().strip()
    assert config.gateway.port == PORTS.gateway
    assert config.mail.smtp_port == PORTS.smtp
    assert config.gateway.upstream_url == PORTS.upstream_url


def test_the_environment_of_the_caller_is_ignored(
    first: tuple[DevLayout, FakeClock, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, clock, _ = first
    monkeypatch.setenv("BROKERGATE_STORE__URL", "sqlite:////nonexistent/elsewhere.db")
    report = bootstrap(layout, PORTS, clock=clock)
    assert report.config.store.url == layout.database_url


def test_the_server_certificate_is_for_localhost_and_verifies(
    first: tuple[DevLayout, FakeClock, list[str]],
) -> None:
    layout, clock, _ = first
    at = ["-attime", str(int(clock().timestamp()))]  # the fake clock made the certificates
    leaf = x509.load_pem_x509_certificate(layout.server_cert.read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    ok = subprocess.run(
        ["openssl", "verify", *at, "-CAfile", str(layout.server_ca_cert), str(layout.server_cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Negative: the broker CA (client certificates only) does not vouch for the server.
    bad = subprocess.run(
        [
            "openssl",
            "verify",
            *at,
            "-CAfile",
            str(layout.broker_ca_bundle),
            str(layout.server_cert),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0


def test_a_lost_pkcs12_is_replaced_and_the_old_certificate_revoked(
    first: tuple[DevLayout, FakeClock, list[str]],
) -> None:
    layout, clock, _ = first
    old_serial = DevState.load(layout.state_file).demo_serial
    layout.demo_p12.unlink()
    report = bootstrap(layout, PORTS, clock=clock)
    assert [c for c in report.created if "demo-broker.p12" in c]
    new_serial = report.state.demo_serial
    assert new_serial and new_serial != old_serial
    assert mode(layout.demo_p12) == 0o600
    engine = make_engine(layout.database_url)
    try:
        with transaction(session_factory(engine)) as session:
            status = dict(session.execute(select(Certificate.serial, Certificate.status)).all())
    finally:
        engine.dispose()
    assert status[old_serial] == CertificateStatus.REVOKED
    assert status[new_serial] == CertificateStatus.VALID


def test_server_certificate_is_renewed_close_to_expiry(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    paths = ServerCertPaths(
        ca_cert=tmp_path / "ca.pem",
        ca_key=tmp_path / "ca-key.pem",
        cert=tmp_path / "server.pem",
        key=tmp_path / "server-key.pem",
    )
    now = datetime(2026, 11, 25, tzinfo=UTC)
    assert len(ensure_server_certificates(paths, now=now)) == 4
    assert ensure_server_certificates(paths, now=now + timedelta(days=300)) == []
    renewed = ensure_server_certificates(paths, now=now + timedelta(days=380))
    assert renewed == [paths.cert, paths.key]  # the CA (ten years) stays
    # A key that does not match its certificate is replaced, never served.
    paths.key.write_bytes(paths.ca_key.read_bytes())
    assert ensure_server_certificates(paths, now=now) == [paths.cert, paths.key]


def test_secret_files_are_kept_tightened_and_checked(tmp_path: Path) -> None:
    secret = tmp_path / "data" / "secret"
    assert ensure_secret_file(secret) is True
    value = secret.read_bytes()
    assert ensure_secret_file(secret) is False
    assert secret.read_bytes() == value  # never overwritten
    secret.chmod(0o644)
    ensure_secret_file(secret)
    assert mode(secret) == 0o600
    secret.write_bytes(b"\n")
    with pytest.raises(DevSecretError, match="empty"):
        ensure_secret_file(secret)


def test_ports_are_validated() -> None:
    with pytest.raises(ValueError, match="must differ"):
        DevPorts(gateway=8443, upstream=8443, smtp=8025)
    with pytest.raises(ValueError, match="between 1 and 65535"):
        DevPorts(gateway=0)
    assert DevPorts(metrics=0).metrics == 0


def test_rendered_config_loads_and_rejects_nothing(tmp_path: Path) -> None:
    layout = DevLayout.at(tmp_path)
    for secret in (layout.secret_key_file, layout.ca_passphrase_file):
        ensure_secret_file(secret)
    layout.config_file.write_text(render_dev_config(layout, PORTS))
    config = load_config(layout.config_file, env={})
    assert config.gateway.public_url == "https://localhost:18443"


# --- issue 16: a German demo, an overlay that is never overwritten, a banner that is true ---


def test_the_demo_users_are_german(first: tuple[DevLayout, FakeClock, list[str]]) -> None:
    """German login and TAN pages must lead to German mails and a German account page."""
    layout, _, _ = first
    engine = make_engine(layout.database_url)
    try:
        with transaction(session_factory(engine)) as session:
            locales = {e: loc for e, loc in session.execute(select(User.email, User.locale))}
            mail = session.scalars(select(MailOutbox)).first()
    finally:
        engine.dispose()
    assert locales[DEMO_BROKER.email] == "de" and locales[FALLBACK_USER.email] == "de"
    assert mail is not None and mail.locale == "de"


OVERLAY = """\
# my own settings
[ca]
ca_key_type = "rsa2048"

[gateway]
idle_timeout = "20m"
default_level = "strong"

[[gateway.routes]]
prefix = "/calculator"
level = "restricted"
"""


def test_an_overlay_is_merged_on_every_start_and_never_written(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    clock = FakeClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    layout = DevLayout.at(tmp_path / "project")
    layout.root.mkdir()
    layout.overlay_file.write_text(OVERLAY)
    for _ in range(2):  # the second start merges it again: nothing of it is lost
        report = bootstrap(layout, PORTS, clock=clock)
        assert report.overlay == layout.overlay_file
        config = load_config(layout.config_file, env={})
        assert config.gateway.idle_timeout == timedelta(minutes=20)
        assert config.gateway.default_level.value == "strong"
        assert [r.prefix for r in config.gateway.routes] == ["/calculator"]
        assert config.gateway.port == PORTS.gateway  # the generated values are still there
        assert config.ca.pkcs12_dir == layout.pkcs12_dir and mode(layout.pkcs12_dir) == 0o700
        assert layout.overlay_file.read_text() == OVERLAY
    text = layout.config_file.read_text()
    assert f"export BROKERGATE_CONFIG={layout.config_file}" in text
    assert "dev-overlay.toml" in text
    # An overlay named on the command line wins over the default file.
    other = tmp_path / "other.toml"
    other.write_text('[gateway]\nidle_timeout = "5m"\n')
    report = bootstrap(layout, PORTS, clock=clock, overlay=other)
    assert report.config.gateway.idle_timeout == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("overlay", "key", "problem"),
    [
        ("[gateway]\nport = 9999\n", "gateway.port", "use --gateway-port"),
        ('[store]\nurl = "sqlite:///x.db"\n', "store.url", "set by dev run"),
        ("[gatway]\nport = 1\n", "gatway", "unknown section"),
        ("[gateway\n", "(file)", "not valid TOML"),
        ('[gateway]\nidle_timeout = "soon"\n', "gateway.idle_timeout", "duration"),
        ("[gateway]\nidle_timout = 1\n", "gateway.idle_timout", "unknown key"),
    ],
)
def test_a_bad_overlay_is_named_with_its_key(
    tmp_path: Path, overlay: str, key: str, problem: str
) -> None:
    from datetime import UTC, datetime

    from brokergate._config import ConfigError

    layout = DevLayout.at(tmp_path / "project")
    layout.root.mkdir()
    layout.overlay_file.write_text(overlay)
    with pytest.raises(ConfigError) as raised:
        bootstrap(layout, PORTS, clock=FakeClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC)))
    message = str(raised.value)
    assert key in message and problem in message and str(layout.overlay_file) in message
    assert not layout.database.exists()  # checked before the store and the CA keys are made


def test_the_welcome_text_says_how_to_point_the_cli_and_where_the_password_is(
    first: tuple[DevLayout, FakeClock, list[str]],
) -> None:
    from brokergate._dev import BootstrapReport, welcome_lines

    layout, _, _ = first
    config = load_config(layout.config_file, env={})
    fresh = BootstrapReport(config=config, state=DevState(demo_serial="ab"), created=["x"])
    text = "\n".join(welcome_lines(layout, PORTS, fresh))
    assert f"export BROKERGATE_CONFIG={layout.config_file}" in text
    assert "shown above" not in text
    assert "printed as a [mail] line when it arrives" in text
    assert "put them in dev-overlay.toml" in text
    # A restart: the mail arrived in an earlier run, nothing prints it now.
    known = DevState(demo_serial="ab", password_mail="data/mail/x.eml")
    restart = BootstrapReport(config=config, state=known, overlay=layout.overlay_file)
    text = "\n".join(welcome_lines(layout, PORTS, restart))
    assert "data/mail/x.eml" in text and "when it arrives" not in text
    assert "dev-overlay.toml applied" in text
