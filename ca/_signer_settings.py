"""The ``[signer]`` section (issue 12): where the signer listens and the limits it enforces.

Read by two processes: the signer (``brokergate ca serve``) listens on ``socket_path`` and
enforces the rates; the gateway only connects to ``socket_path``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

# Per broker: the download page allows 3 a day (logins.downloads_per_day); a few more an
# hour here leave room for that while a compromised gateway still cannot mint many.
DEFAULT_USER_RATE = 5
# Everyone together: a renewal wave of a few thousand brokers spreads over two months;
# 200 an hour is far above that and far below "a certificate for every broker at once".
DEFAULT_GLOBAL_RATE = 200


@dataclass(frozen=True, kw_only=True)
class SignerSettings:
    socket_path: Path | None = field(
        default=None,
        metadata={
            "help": "Unix socket of the signer (brokergate ca serve). The gateway asks it for "
            "certificates instead of holding the CA key; unset: the gateway issues "
            "in-process with ca.passphrase (the make run default); see docs/operations.md"
        },
    )
    socket_group: str = field(
        default="",
        metadata={
            "help": "Group the signer gives its socket (mode 0660): the gateway's group, so "
            "only the gateway can connect; empty: the signer's own group"
        },
    )
    user_rate: int = field(
        default=DEFAULT_USER_RATE,
        metadata={"help": "Certificates the signer issues per broker within rate_window"},
    )
    global_rate: int = field(
        default=DEFAULT_GLOBAL_RATE,
        metadata={
            "help": "Certificates the signer issues for downloads, all brokers together, "
            "within rate_window"
        },
    )
    rate_window: timedelta = field(
        default=timedelta(hours=1),
        metadata={"help": "The window user_rate and global_rate are counted in"},
    )
    request_retention: timedelta = field(
        default=timedelta(hours=1),
        metadata={
            "help": "How long the signer keeps an answered request, so that a retry with the "
            "same request id gets the same certificate back; then the row is deleted"
        },
    )
    metrics_port: int = field(
        default=0,
        metadata={
            "help": "Port on 127.0.0.1 where the signer serves /metrics for Prometheus "
            "(brokergate_signer_rate_limited_total: alert on any increase); 0: only on its "
            "socket"
        },
    )
    timeout: timedelta = field(
        default=timedelta(seconds=30),
        metadata={"help": "How long the gateway waits for the signer's answer"},
    )

    def __post_init__(self) -> None:
        if self.user_rate < 1 or self.global_rate < 1:
            raise ValueError("user_rate and global_rate must be at least 1")
        if self.rate_window <= timedelta(0) or self.timeout <= timedelta(0):
            raise ValueError("rate_window and timeout must be longer than 0s")
        if self.request_retention < self.rate_window:
            # The rates count stored requests: deleting them sooner would lift the rates.
            raise ValueError("request_retention must not be shorter than rate_window")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError("metrics_port must be 0..65535")
