"""Chain verification of client certificates: the ONE place that uses ``x509.verification``.

pyca/cryptography marks ``cryptography.x509.verification`` as unstable (its API may change
between majors); pyproject pins the major range we test, and nothing else in brokergate
imports it, so a change is fixed here once.

The client verifier checks the chain up to one of our roots (RFC 5280 path validation,
CABF-style profile), validity of every certificate at the given time and the EKU
clientAuth of the leaf. Results are cached per leaf fingerprint for as long as the whole
chain is within its validity, so steady-state requests cost a dictionary lookup.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

__all__ = ["ChainVerifier"]

_CACHE_LIMIT = 50_000  # leaves remembered per replica; more brokers than any one insurer has


@dataclass(frozen=True, kw_only=True)
class _Verified:
    valid_from: datetime
    valid_until: datetime


class ChainVerifier:
    """Verifies leaves against fixed trust material; build a new one when the material changes.

    Args:
        roots: trusted root CAs (``TrustMaterial.roots``).
        intermediates: non-retired issuing CAs and cross certificates
            (``TrustMaterial.intermediates``); clients usually send only their leaf.
    """

    def __init__(
        self, *, roots: Sequence[x509.Certificate], intermediates: Sequence[x509.Certificate]
    ) -> None:
        if not roots:
            raise ValueError("a chain verifier needs at least one root")
        self._store = Store(list(roots))
        self._intermediates = list(intermediates)
        self._cache: dict[str, _Verified] = {}
        self._lock = threading.Lock()

    def verify(self, leaf: x509.Certificate, fingerprint: str, now: datetime) -> str | None:
        """None if the chain of ``leaf`` is valid at ``now``, else the reason (for logs)."""
        with self._lock:
            hit = self._cache.get(fingerprint)
        if hit is not None and hit.valid_from <= now <= hit.valid_until:
            return None
        verifier = PolicyBuilder().store(self._store).time(now).build_client_verifier()
        try:
            verified = verifier.verify(leaf, self._intermediates)
        except VerificationError as exc:
            return str(exc)
        chain = verified.chain
        entry = _Verified(
            valid_from=max(c.not_valid_before_utc for c in chain),
            valid_until=min(c.not_valid_after_utc for c in chain),
        )
        with self._lock:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[fingerprint] = entry
        return None
