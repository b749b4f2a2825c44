"""The public trust material: what relying parties (the gateway, openssl, nginx) need."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from store import CAGeneration, CARoot, GenerationStatus, RootStatus


@dataclass(frozen=True, kw_only=True)
class TrustMaterial:
    """Non-retired roots and issuing CAs. Needs no passphrase: it is all public."""

    roots: list[x509.Certificate]
    # Issuing CAs and the cross certificates of a root rotation (new root signed by old).
    intermediates: list[x509.Certificate]
    issuing_by_generation: dict[int, x509.Certificate]

    def bundle_pem(self) -> bytes:
        """Roots, then cross certificates, then issuing CAs, as one PEM file."""
        return b"".join(
            cert.public_bytes(serialization.Encoding.PEM)
            for cert in [*self.roots, *self.intermediates]
        )


def _load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def load_trust_material(session: Session) -> TrustMaterial:
    """The trust anchors and intermediates of every non-retired generation."""
    roots = session.scalars(
        select(CARoot).where(CARoot.status != RootStatus.RETIRED).order_by(CARoot.id)
    ).all()
    generations = session.scalars(
        select(CAGeneration)
        .where(CAGeneration.status != GenerationStatus.RETIRED)
        .order_by(CAGeneration.id)
    ).all()
    issuing = {g.id: _load(g.cert_pem) for g in generations}
    cross = [_load(r.cross_cert_pem) for r in roots if r.cross_cert_pem]
    return TrustMaterial(
        roots=[_load(r.cert_pem) for r in roots],
        intermediates=[*cross, *issuing.values()],
        issuing_by_generation=issuing,
    )
