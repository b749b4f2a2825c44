"""Machine endpoints: ``/healthz``, the JWKS of the signed assertion, and the CRLs."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway._state import FACTORY
from gateway.auth._request_state import TRUST
from gateway.proxy._assertion import SIGNER
from store import (
    CAGeneration,
    GenerationStatus,
)

log = logging.getLogger("gateway")


async def healthz(request: web.Request) -> web.Response:
    fresh = request.app[TRUST].fresh
    return web.json_response(
        {"status": "ok" if fresh else "store-stale"}, status=200 if fresh else 503
    )


async def crl(request: web.Request) -> web.Response:
    """A generation's current CRL (DER), where certificates' CRL distribution points point.

    Anonymous by design (RFC 5280 §4.2.1.13: relying parties fetch CRLs without
    credentials); the CRL is signed, so the transport needs no trust of its own.
    """
    generation = int(request.match_info["generation"])

    def load() -> str | None:
        with request.app[FACTORY]() as db:
            row = db.get(CAGeneration, generation)
            if row is None or row.status == GenerationStatus.RETIRED:
                return None
            return row.crl_pem

    pem = await asyncio.to_thread(load)
    if pem is None:
        raise web.HTTPNotFound()
    der = x509.load_pem_x509_crl(pem.encode()).public_bytes(serialization.Encoding.DER)
    # Short caching: a revocation re-publishes the CRL at once.
    return web.Response(
        body=der, content_type="application/pkix-crl", headers={"Cache-Control": "max-age=300"}
    )


async def jwks(request: web.Request) -> web.Response:
    response = web.json_response(request.app[SIGNER].jwks())
    response.headers["Cache-Control"] = "public, max-age=60"
    return response
