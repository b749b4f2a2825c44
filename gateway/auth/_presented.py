"""What this replica remembers of presented certificates: owned by the app, bounded.

One :class:`PresentedCertificates` per application (``app[PRESENTED]``, made by
``create_app``), never a module global:

* each certificate is parsed once, however many connections present it (a browser opens
  several). The cache is keyed by the DER bytes themselves: Python caches a ``bytes``
  object's hash, so the requests of one connection (which hand us the same object) cost
  one dictionary probe, and equal bytes from another connection find the same entry by
  value. Nothing is keyed by ``id()``, so a recycled object can never borrow another
  certificate's entry.
* the DER of each TLS connection is read once (it cannot change within a connection,
  also not after resumption); connections are held weakly, so a closed one is forgotten.
* whether a connection's handshake was already counted in ``brokergate_handshakes``.

Staleness: the parse of a certificate never goes stale (the bytes are the certificate);
what the store says of it lives in the trust cache (``gateway.auth._trust_cache``), with
its own bound.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from gateway.auth._certificate_identity import CertificateFacts

__all__ = [
    "CLIENT_CERTIFICATE_DER_LIMIT",
    "PARSE_LIMIT",
    "ParsedCertificate",
    "PresentedCertificates",
]

PARSE_LIMIT = 20_000  # distinct certificates kept per replica (~2 KB each: ~40 MB at most)
# SECURITY: the largest certificate (DER bytes) that is parsed and kept (issue 17, item 4);
# a bigger one is answered with the "cannot be used" certificate page, unparsed and not
# cached. Ours are ~1 KB and client certificates in the field (RSA-4096, long SAN lists)
# ~2-3 KB; 8 KiB leaves room for those and bounds the parse cache at PARSE_LIMIT x 8 KiB
# (160 MB) even if an attacker fills it with padded certificates. TLS lets a client send
# up to gateway.tls.CLIENT_CERTIFICATE_MESSAGE_LIMIT (256 KiB), so sizes in between get
# the page instead of a broken handshake.
CLIENT_CERTIFICATE_DER_LIMIT = 8 * 1024


@dataclass(frozen=True, slots=True)
class ParsedCertificate:
    """A presented certificate, parsed, with what the identity decision reads from it."""

    fingerprint: str  # SHA-256 of the DER, lower-case hex: the store's key
    certificate: x509.Certificate
    facts: CertificateFacts


class PresentedCertificates:
    """The per-replica memory of presented certificates (see the module docstring).

    Args:
        limit: how many distinct certificates are kept; the oldest goes first.
    """

    def __init__(self, *, limit: int = PARSE_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._limit = limit
        self._parsed: dict[bytes, ParsedCertificate] = {}
        self._connection_der: weakref.WeakKeyDictionary[Any, bytes | None] = (
            weakref.WeakKeyDictionary()
        )
        self._counted: weakref.WeakSet[Any] = weakref.WeakSet()
        self.parses = 0  # how many certificates were parsed (tests and metrics read it)

    def parse(self, der: bytes) -> ParsedCertificate:
        """The parsed certificate of ``der`` (parsed on first sight only).

        Raises:
            ValueError: ``der`` is not a certificate.
        """
        found = self._parsed.get(der)
        if found is not None:
            return found
        certificate = x509.load_der_x509_certificate(der)
        self.parses += 1
        parsed = ParsedCertificate(
            fingerprint=hashlib.sha256(der).hexdigest(),
            certificate=certificate,
            facts=CertificateFacts.of(certificate),
        )
        if len(self._parsed) >= self._limit:
            del self._parsed[next(iter(self._parsed))]  # dicts keep insertion order: oldest
        self._parsed[der] = parsed
        return parsed

    def connection_der(self, connection: Any, read: Any) -> bytes | None:
        """The DER ``read(connection)`` gives, read once per connection.

        Args:
            connection: the ``ssl.SSLObject`` of the request's TLS connection.
            read: ``gateway.tls.peer_certificate_der``.
        """
        try:
            return self._connection_der[connection]
        except KeyError:
            der: bytes | None = read(connection)
            self._connection_der[connection] = der
            return der
        except TypeError:  # not weak-referenceable: no caching
            value: bytes | None = read(connection)
            return value

    def first_request_on(self, connection: Any) -> bool:
        """True once per connection: its handshake is counted on its first request."""
        if connection in self._counted:
            return False
        self._counted.add(connection)
        return True
