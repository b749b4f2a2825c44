"""Where ``brokergate dev run`` keeps its files, and which loopback ports it uses.

Everything lives under one project folder (the current directory for ``make run``):
``data/`` (SQLite store, secrets, delivered mail, the generated dev config) and
``certs-dev/`` (dev server CA, ``localhost`` certificate, broker CA bundle, demo
broker's PKCS#12). Both are git-ignored; deleting them starts from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"  # dev run never binds anything but loopback


@dataclass(frozen=True, kw_only=True)
class DevPorts:
    """Loopback ports of the dev processes (flags of ``dev run``; tests pick free ones)."""

    gateway: int = 8443
    upstream: int = 8080
    smtp: int = 8025
    metrics: int = 9464  # 0 switches the gateway's /metrics listener off

    def __post_init__(self) -> None:
        for name in ("gateway", "upstream", "smtp"):
            value = getattr(self, name)
            if not 0 < value < 65536:
                raise ValueError(f"{name} port must be between 1 and 65535, got {value}")
        if not 0 <= self.metrics < 65536:
            raise ValueError(f"metrics port must be between 0 (off) and 65535, got {self.metrics}")
        used = [p for p in (self.gateway, self.upstream, self.smtp, self.metrics) if p]
        if len(set(used)) != len(used):
            raise ValueError(f"the ports must differ from each other, got {used}")

    @property
    def gateway_url(self) -> str:
        # "localhost" (not 127.0.0.1): the name the dev server certificate is made for and
        # the one a browser shows; the certificate carries both names anyway.
        return f"https://localhost:{self.gateway}"

    @property
    def upstream_url(self) -> str:
        return f"http://{LOOPBACK}:{self.upstream}"


@dataclass(frozen=True, kw_only=True)
class DevLayout:
    """Absolute paths of every file ``dev run`` creates or reads."""

    root: Path

    @classmethod
    def at(cls, root: Path) -> DevLayout:
        return cls(root=root.resolve())

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def certs_dir(self) -> Path:
        return self.root / "certs-dev"

    @property
    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    @property
    def database(self) -> Path:
        return self.data_dir / "brokergate.db"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret-key"

    @property
    def ca_passphrase_file(self) -> Path:
        return self.data_dir / "ca-passphrase"

    @property
    def config_file(self) -> Path:
        """The generated configuration every dev process is started with."""
        return self.data_dir / "brokergate-dev.toml"

    @property
    def overlay_file(self) -> Path:
        """The developer's own settings, merged into :attr:`config_file` on every start and
        never written by ``dev run`` (git-ignored; ``--overlay FILE`` names another)."""
        return self.root / "dev-overlay.toml"

    @property
    def pkcs12_dir(self) -> Path:
        """Where ``brokergate cert issue`` writes PKCS#12 files for the dev system."""
        return self.data_dir / "pkcs12"

    @property
    def state_file(self) -> Path:
        """What the bootstrap made (demo users, certificate serial, password mail)."""
        return self.data_dir / "dev-state.json"

    @property
    def server_ca_cert(self) -> Path:
        return self.certs_dir / "server-ca.pem"

    @property
    def server_ca_key(self) -> Path:
        return self.certs_dir / "server-ca-key.pem"

    @property
    def server_cert(self) -> Path:
        return self.certs_dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.certs_dir / "server-key.pem"

    @property
    def broker_ca_bundle(self) -> Path:
        return self.certs_dir / "broker-ca-bundle.pem"

    @property
    def demo_p12(self) -> Path:
        return self.certs_dir / "demo-broker.p12"

    def relative(self, path: Path) -> str:
        """``path`` relative to the project folder, for messages a person copies."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)
