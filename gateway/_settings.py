"""The gateway's settings (read once by the CLI, passed down)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    host: str = field(default="127.0.0.1", metadata={"help": "Address the HTTPS listener binds"})
    port: int = field(default=8443, metadata={"help": "Port of the HTTPS listener"})
    server_cert: Path = field(
        default=Path("certs-dev/server.pem"),
        metadata={"help": "PEM server certificate chain of the HTTPS listener"},
    )
    server_key: Path = field(
        default=Path("certs-dev/server-key.pem"),
        metadata={"help": "PEM private key of the server certificate (mode 0600)"},
    )
    upstream_url: str = field(
        default="http://127.0.0.1:8080",
        metadata={"help": "Base URL of the unchanged upstream portal"},
    )
    public_url: str = field(
        default="https://localhost:8443",
        metadata={"help": "The URL brokers type; used in mails and for same-origin checks"},
    )

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("port must be between 1 and 65535")
