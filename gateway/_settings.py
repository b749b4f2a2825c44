"""The gateway's settings (read once by the CLI, passed down)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from gateway._errors import PathRejected
from gateway._networks import IPNetwork, parse_networks
from gateway._paths import normalise_path
from store import DEFAULT_TIME_ZONE, Level, time_zone

RESERVED_PREFIX = "/_gateway"  # the gateway's own pages; never forwarded upstream
COOKIE_PREFIX = "__Host-"  # RFC 6265bis §4.1.3.2: Secure, Path=/, no Domain, set over HTTPS
# idle_timeout's range (issue 16): under 10 s nobody can read a page before being logged
# out; over a day "idle" means nothing next to absolute_timeout.
IDLE_TIMEOUT_MIN = timedelta(seconds=10)
IDLE_TIMEOUT_MAX = timedelta(hours=24)
# A session ends after at most a month, however active: a bound that no setting can lift.
ABSOLUTE_TIMEOUT_MAX = timedelta(days=30)


def _seconds(value: timedelta) -> str:
    """A duration as the configuration writes it: "90s", "15m", "12h"."""
    total = value.total_seconds()
    for unit, size in (("h", 3600), ("m", 60)):
        if total and total % size == 0:
            return f"{int(total // size)}{unit}"
    return f"{total:g}s"


@dataclass(frozen=True, kw_only=True)
class RouteRule:
    """One line of the route policy: paths starting with ``prefix`` need ``level``.

    Matching is case-insensitive on the normalised path (docs/gateway.md "Route policy");
    the longest matching prefix wins, and a rule naming the request's method beats one
    without methods at the same prefix.
    """

    prefix: str = field(metadata={"help": "Normalised path prefix, e.g. /antrag (no trailing /)"})
    level: Level = field(metadata={"help": "Minimum level: anonymous, restricted, basic, strong"})
    methods: tuple[str, ...] = field(
        default=(), metadata={"help": "Only for these methods (empty: every method)"}
    )
    fresh_within: timedelta | None = field(
        default=None,
        metadata={"help": "Also require a factor presented within this time (step-up)"},
    )
    right: str | None = field(
        default=None,
        metadata={
            "help": "Also require this product right, a key of the [firms] catalogue (e.g. "
            "ORV); needs level basic or strong"
        },
    )

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/"):
            raise ValueError(f"route prefix {self.prefix!r} must start with /")
        if self.prefix != "/" and self.prefix.endswith("/"):
            raise ValueError(f"route prefix {self.prefix!r}: write it without the trailing /")
        try:
            canonical = normalise_path(self.prefix).path
        except PathRejected as exc:
            raise ValueError(f"route prefix {self.prefix!r}: {exc.detail}") from None
        if canonical != self.prefix:
            raise ValueError(
                f"route prefix {self.prefix!r} is not in normal form; write {canonical!r}"
            )
        if self.prefix.lower().startswith(RESERVED_PREFIX):
            raise ValueError(f"route prefix {self.prefix!r} is inside the gateway's own pages")
        object.__setattr__(self, "methods", tuple(m.upper() for m in self.methods))
        if self.fresh_within is not None and self.fresh_within <= timedelta(0):
            raise ValueError("fresh_within must be longer than 0s")
        if self.right is not None:
            object.__setattr__(self, "right", self.right.strip().upper())
            if not self.right:
                raise ValueError(f"route {self.prefix!r}: right must not be empty")
            if not self.level.satisfies(Level.BASIC):
                # Rights belong to a proven person; a restricted session (broker number
                # only) is the firm, not one of its people (docs/gateway.md "Route rights").
                raise ValueError(
                    f"route {self.prefix!r} needs right {self.right!r}: its level must be "
                    f"basic or strong, not {self.level.value}"
                )


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
        self._check_core_settings()
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
    terminator_format: Literal[
        "none", "nginx", "haproxy", "envoy", "rfc9440", "caddy", "traefik"
    ] = field(
        default="none",
        metadata={
            "help": "Where the client certificate comes from: none = the gateway's own TLS "
            "handshake; nginx ($ssl_client_escaped_cert), haproxy (base64 DER), envoy (XFCC), "
            "rfc9440 (Client-Cert: :base64 DER:), caddy (base64 DER placeholder), traefik "
            "(passTLSClientCert pem)"
        },
    )
    forward_auth: bool = field(
        default=False,
        metadata={
            "help": "Forward-auth mode: answer the front proxy's authorisation subrequests "
            "on /_gateway/auth (nginx auth_request, Caddy forward_auth, Traefik "
            "ForwardAuth; with terminator_format envoy also Envoy ext_authz on "
            "/_gateway/auth/envoy/<path>); needs terminator_format and trusted_proxies "
            "(docs/forward-auth.md)"
        },
    )
    client_cert_header: str = field(
        default="",
        metadata={
            "help": "Header carrying the client certificate in terminator mode (empty: "
            "X-SSL-Client-Cert for nginx/haproxy/caddy, X-Forwarded-Client-Cert for envoy, "
            "Client-Cert for rfc9440, X-Forwarded-Tls-Client-Cert for traefik)"
        },
    )
    proxy_protocol: bool = field(
        default=False,
        metadata={
            "help": "Every connection to the HTTPS listener starts with a PROXY protocol "
            "header (v1 or v2, e.g. HAProxy send-proxy-v2) naming the client's address; "
            "believed only from trusted_proxies, anything else is closed before TLS"
        },
    )
    proxy_protocol_timeout: timedelta = field(
        default=timedelta(seconds=3),
        metadata={
            "help": "With proxy_protocol: a connection whose PROXY header is not complete "
            "within this time is closed"
        },
    )
    max_connections: int = field(
        default=1024,
        metadata={
            "help": "Most open client connections per worker process; at the cap the "
            "listener stops accepting and new connections wait in the listen queue"
        },
    )
    tls_handshake_timeout: timedelta = field(
        default=timedelta(seconds=10),
        metadata={"help": "A client's TLS handshake must finish within this time of accept"},
    )
    first_request_timeout: timedelta = field(
        default=timedelta(seconds=10),
        metadata={
            "help": "After the handshake, the first byte of a request must arrive within "
            "this time, or the (idle) connection is closed"
        },
    )
    request_head_timeout: timedelta = field(
        default=timedelta(seconds=10),
        metadata={
            "help": "From a request's first byte, its request line and headers must be "
            "complete within this time, or the connection is closed (slow headers)"
        },
    )
    keepalive_timeout: timedelta = field(
        default=timedelta(seconds=15),
        metadata={
            "help": "After a response, the next request must start within this time, or "
            "the idle keep-alive connection is closed"
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
    store_threads: int = field(
        default=32,
        metadata={
            "help": "Threads per worker process for blocking store calls, and the size of its "
            "database connection pool: a request waiting on a locked write never holds up "
            "a read while fewer than this many wait (4..256)"
        },
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
        self.trusted_networks  # noqa: B018 - parsed once, here, for every request after
        if self.terminator_format != "none" and not self.trusted_proxies:
            raise ValueError(
                f"terminator_format = {self.terminator_format!r} needs trusted_proxies: the "
                "addresses of the terminator whose certificate header may be believed"
            )
        if self.forward_auth and self.terminator_format == "none":
            raise ValueError(
                "forward_auth = true needs terminator_format: the front proxy terminates TLS "
                "and forwards the client certificate (e.g. 'rfc9440', 'nginx' or 'caddy')"
            )
        if self.proxy_protocol and not self.trusted_proxies:
            raise ValueError(
                "proxy_protocol = true needs trusted_proxies: the addresses of the load "
                "balancers whose PROXY header may be believed (e.g. ['10.0.0.5/32'])"
            )
        if self.proxy_protocol and self.terminator_format != "none":
            raise ValueError(
                f"proxy_protocol = true is for an L4 balancer in front of the gateway's own "
                f"TLS; with terminator_format = {self.terminator_format!r} the terminator "
                "passes the client's address in X-Forwarded-For: set proxy_protocol = false"
            )
        if not timedelta(0) < self.proxy_protocol_timeout <= timedelta(seconds=60):
            raise ValueError("proxy_protocol_timeout must be between 0s and 60s")
        if self.upstream_pool_size < 1:
            raise ValueError("upstream_pool_size must be at least 1")
        if not 4 <= self.store_threads <= 256:
            raise ValueError(f"store_threads must be between 4 and 256, not {self.store_threads}")
        if not 1 <= self.workers <= 256:
            raise ValueError("workers must be between 1 and 256")
        if not 0 <= self.metrics_port < 65536:
            raise ValueError("metrics_port must be between 0 (off) and 65535")
        for name in ("upstream_connect_timeout", "upstream_read_timeout", "shutdown_grace"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be longer than 0s")
        if not 1 <= self.max_connections <= 1_000_000:
            raise ValueError(
                f"max_connections must be between 1 and 1000000, not {self.max_connections}"
            )
        for name in (
            "tls_handshake_timeout",
            "first_request_timeout",
            "request_head_timeout",
            "keepalive_timeout",
        ):
            if not timedelta(0) < getattr(self, name) <= timedelta(minutes=10):
                raise ValueError(f"{name} must be between 0s and 10 minutes")

    # --- identity, sessions, route policy (gw-core)
    routes: tuple[RouteRule, ...] = field(
        default=(),
        metadata={
            "help": "Route policy: [[gateway.routes]] tables with prefix, level, optional "
            "methods, fresh_within and right; see docs/gateway.md"
        },
    )
    default_level: Level = field(
        default=Level.BASIC,
        metadata={"help": "Level needed by every path no route names"},
    )
    idle_timeout: timedelta = field(
        default=timedelta(minutes=15),
        metadata={
            "help": "A session ends after this long without activity (10s to 24h); the next "
            "login page says so"
        },
    )
    absolute_timeout: timedelta = field(
        default=timedelta(hours=12),
        metadata={
            "help": "A session ends this long after it began, active or not (idle_timeout "
            "to 30 days)"
        },
    )
    inactivity_exempt_paths: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Path prefixes whose requests do not count as activity (background "
            "polling must not keep a session alive)"
        },
    )
    twofa_deadline: str = field(
        default="",
        metadata={
            "help": "Until this UTC time (e.g. 2027-03-31T00:00:00Z) a basic user may skip "
            "the 2FA prompt with 'Not now'; empty: no grace period, strong routes enforced"
        },
    )
    certificate_requires_password: bool = field(
        default=False,
        metadata={
            "help": "The certificate counts only as second factor after a password "
            "(no single sign-on); default off, as in the portal manual"
        },
    )
    portal_renewal_banner: bool = field(
        default=False,
        metadata={
            "help": "Also show the renewal banner at the top of the portal's own HTML pages "
            "(uncompressed, with Content-Length, up to 1 MiB) to certificate brokers within "
            "the reminder window; off: the interstitial once per session and the identity "
            "headers only (docs/renewal.md)"
        },
    )
    session_cookie_name: str = field(
        default="__Host-brokergate",
        metadata={"help": "Name of the session cookie (must start with __Host-)"},
    )
    revocation_refresh_interval: timedelta = field(
        default=timedelta(seconds=2),
        metadata={
            "help": "How often each replica polls the store for revocations, user and "
            "session changes (at most 2s, so revocation holds everywhere within 5s)"
        },
    )
    assertion_lifetime: timedelta = field(
        default=timedelta(seconds=60),
        metadata={"help": "Lifetime of the signed identity assertion sent upstream"},
    )
    time_zone: str = field(
        default=DEFAULT_TIME_ZONE,
        metadata={
            "help": "IANA time zone of the brokers: pages show dates and times in it, and "
            "days before a certificate expires are its calendar days (e.g. Europe/Amsterdam)"
        },
    )

    @cached_property
    def account_url(self) -> str:
        """The account page ("Mein Konto") under :attr:`public_url`, built once."""
        return self.public_url.rstrip("/") + RESERVED_PREFIX + "/account"

    @cached_property
    def zone(self) -> ZoneInfo:
        """:attr:`time_zone` as a zone, checked once at construction."""
        return time_zone(self.time_zone)

    @cached_property
    def trusted_networks(self) -> tuple[IPNetwork, ...]:
        """:attr:`trusted_proxies` as networks, parsed once at construction."""
        return parse_networks(self.trusted_proxies)

    @cached_property
    def twofa_deadline_at(self) -> datetime | None:
        """The parsed :attr:`twofa_deadline` (aware UTC), or None when no grace is given;
        parsed once, at construction (``_check_core_settings``)."""
        if not self.twofa_deadline:
            return None
        value = datetime.fromisoformat(self.twofa_deadline.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def _check_core_settings(self) -> None:
        self.zone  # noqa: B018 - ValueError naming the zone and what to write instead
        if not self.session_cookie_name.startswith(COOKIE_PREFIX):
            raise ValueError(f"session_cookie_name must start with {COOKIE_PREFIX}")
        if not IDLE_TIMEOUT_MIN <= self.idle_timeout <= IDLE_TIMEOUT_MAX:
            raise ValueError(
                f"idle_timeout must be between 10s and 24h (got {_seconds(self.idle_timeout)}), "
                'e.g. idle_timeout = "15m" as in the portal manual'
            )
        if not self.idle_timeout <= self.absolute_timeout <= ABSOLUTE_TIMEOUT_MAX:
            raise ValueError(
                "absolute_timeout must be between idle_timeout and 30 days (got "
                f"{_seconds(self.absolute_timeout)}, idle_timeout {_seconds(self.idle_timeout)})"
            )
        if not timedelta(0) < self.revocation_refresh_interval <= timedelta(seconds=2):
            raise ValueError(
                "revocation_refresh_interval must be between 0s and 2s (revocation must "
                "hold on every replica within 5s)"
            )
        if not timedelta(seconds=5) <= self.assertion_lifetime <= timedelta(minutes=10):
            raise ValueError("assertion_lifetime must be between 5s and 10m")
        for path in self.inactivity_exempt_paths:
            if not path.startswith("/"):
                raise ValueError(f"inactivity_exempt_paths: {path!r} must start with /")
        if self.twofa_deadline:
            try:
                self.twofa_deadline_at  # noqa: B018 - parse to validate
            except ValueError:
                raise ValueError(
                    f"twofa_deadline {self.twofa_deadline!r} is not a time like "
                    "2027-03-31T00:00:00Z"
                ) from None
