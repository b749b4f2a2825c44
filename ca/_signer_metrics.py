"""The signer's Prometheus metrics (issue 12): what an operator alerts on.

``brokergate_signer_rate_limited_total{limit="user"|"global"}`` rises when a caller (the
gateway, compromised or not) asks for more certificates than the signer's own rates allow;
each such refusal is also an audit event ``signer.refused``. A registry per signer (not
prometheus-client's global one): tests run several in one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ca._signer import SIGNER_RATE_GLOBAL, SIGNER_RATE_USER

LIMITS = {SIGNER_RATE_USER: "user", SIGNER_RATE_GLOBAL: "global"}
OUTCOMES = ("issued", "refused", "replayed", "unavailable")


@dataclass(kw_only=True)
class SignerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "brokergate_signer_requests_total",
            "Issue requests the signer answered, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "brokergate_signer_rate_limited_total",
            "Issue requests refused by the signer's own per-user or global rate "
            "(alert on any increase: the gateway asked for more than brokers do)",
            ["limit"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.requests.labels(outcome=outcome)
        for limit in LIMITS.values():
            self.rate_limited.labels(limit=limit)

    def rate_refusal(self, reason: str) -> None:
        self.rate_limited.labels(limit=LIMITS.get(reason, reason)).inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
