"""The gateway's settings (read once by the CLI, passed down)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal


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
        self._check_proxy_settings()
        if not 0 < self.port < 65536:
            raise ValueError("port must be between 1 and 65535")

    # --- proxy, terminator, serving (gw-proxy)
    trusted_proxies: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Networks (CIDR) of TLS terminators / proxies in front of the gateway; only "
            "their client-certificate and X-Forwarded-* headers are believed (empty: none)"
        },
    )
    terminator_format: Literal["none", "nginx", "haproxy", "envoy"] = field(
        default="none",
        metadata={
            "help": "Where the client certificate comes from: none = the gateway's own TLS "
            "handshake; nginx ($ssl_client_escaped_cert), haproxy (base64 DER), envoy (XFCC)"
        },
    )
    client_cert_header: str = field(
        default="",
        metadata={
            "help": "Header carrying the client certificate in terminator mode (empty: "
            "X-SSL-Client-Cert for nginx/haproxy, X-Forwarded-Client-Cert for envoy)"
        },
    )
    upstream_connect_timeout: timedelta = field(
        default=timedelta(seconds=5),
        metadata={"help": "Time to open a connection to the upstream before the 502 page"},
    )
    upstream_read_timeout: timedelta = field(
        default=timedelta(seconds=60),
        metadata={
            "help": "Longest wait for the upstream's response headers, or between two chunks "
            "of its body, before the 504 page"
        },
    )
    upstream_pool_size: int = field(
        default=100,
        metadata={"help": "Most open connections to the upstream per worker process (keep-alive)"},
    )
    workers: int = field(
        default=1,
        metadata={"help": "Gateway processes sharing the listening port (SO_REUSEPORT)"},
    )
    shutdown_grace: timedelta = field(
        default=timedelta(seconds=30),
        metadata={"help": "On SIGTERM: how long in-flight requests may take to finish"},
    )
    metrics_host: str = field(
        default="127.0.0.1",
        metadata={"help": "Address of the Prometheus /metrics listener (keep it internal)"},
    )
    metrics_port: int = field(
        default=9464,
        metadata={
            "help": "Port of the /metrics listener; worker N (from 0) uses metrics_port + N; "
            "0 disables it"
        },
    )

    def _check_proxy_settings(self) -> None:
        for network in self.trusted_proxies:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {network!r} is not an IP address or network like "
                    "127.0.0.1/32 or 10.0.0.0/8"
                ) from None
        if self.terminator_format != "none" and not self.trusted_proxies:
            raise ValueError(
                f"terminator_format = {self.terminator_format!r} needs trusted_proxies: the "
                "addresses of the terminator whose certificate header may be believed"
            )
        if self.upstream_pool_size < 1:
            raise ValueError("upstream_pool_size must be at least 1")
        if not 1 <= self.workers <= 256:
            raise ValueError("workers must be between 1 and 256")
        if not 0 <= self.metrics_port < 65536:
            raise ValueError("metrics_port must be between 0 (off) and 65535")
        for name in ("upstream_connect_timeout", "upstream_read_timeout", "shutdown_grace"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be longer than 0s")
