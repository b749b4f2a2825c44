"""The demo upstream portal: shows which identity the gateway sent, and whether the signed
assertion verifies against the gateway's published keys (JWKS).

It stands for the unchanged portal behind the gateway: it trusts nothing the client
says, only the assertion it can verify. A real portal would do the same check.
"""

from __future__ import annotations

import html
import ssl
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway import ASSERTION, IDENTITY_HEADER_PREFIX, normalise_header_name
from store import Clock

JWKS_PATH = "/.well-known/jwks.json"
ALGORITHMS = ["ES256", "EdDSA"]  # what the gateway may sign with (issue 3)
JWKS_TIMEOUT = ClientTimeout(total=5)


@dataclass(frozen=True, kw_only=True)
class UpstreamSettings:
    gateway_url: str  # the assertion's issuer, and where the JWKS is fetched
    own_url: str  # the assertion's audience
    gateway_ca_file: str  # trust anchor for the gateway's TLS certificate (dev server CA)


@dataclass(frozen=True, kw_only=True)
class AssertionCheck:
    verified: bool
    detail: str
    claims: dict[str, Any]


class AssertionVerifier:
    """Verifies assertions; fetches the JWKS on first use and again for an unknown ``kid``."""

    def __init__(self, settings: UpstreamSettings, *, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._keys: KeySet | None = None
        self._ssl = ssl.create_default_context(cafile=settings.gateway_ca_file)

    async def _fetch(self) -> KeySet:
        url = self._settings.gateway_url.rstrip("/") + JWKS_PATH
        async with (
            ClientSession(timeout=JWKS_TIMEOUT) as client,
            client.get(url, ssl=self._ssl) as response,
        ):
            response.raise_for_status()
            self._keys = KeySet.import_key_set(await response.json())
        return self._keys

    async def check(self, token: str) -> AssertionCheck:
        try:
            keys = self._keys or await self._fetch()
            try:
                decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
            except JoseError:
                # A key rotated since the last fetch: fetch once more, then decide.
                decoded = jwt.decode(token, await self._fetch(), algorithms=ALGORITHMS)
            registry = jwt.JWTClaimsRegistry(
                now=int(self._clock().timestamp()),
                leeway=5,
                iss={"essential": True, "value": self._settings.gateway_url},
                aud={"essential": True, "value": self._settings.own_url},
                exp={"essential": True},
                sub={"essential": True},
            )
            registry.validate(decoded.claims)
        except (ClientError, TimeoutError) as exc:
            return AssertionCheck(
                verified=False, detail=f"could not fetch the JWKS: {exc!r}", claims={}
            )
        except (JoseError, ValueError) as exc:
            return AssertionCheck(verified=False, detail=f"rejected: {exc}", claims={})
        kid = decoded.header.get("kid", "?")
        return AssertionCheck(
            verified=True,
            detail=f"verified ({decoded.header.get('alg')}, kid {kid}) against {JWKS_PATH}",
            claims=dict(decoded.claims),
        )


VERIFIER = web.AppKey("verifier", AssertionVerifier)


def create_upstream_app(settings: UpstreamSettings, *, clock: Clock) -> web.Application:
    """The demo portal; every path answers with what it was told about the visitor."""
    app = web.Application()
    app[VERIFIER] = AssertionVerifier(settings, clock=clock)
    app.router.add_route("*", "/{tail:.*}", _show_identity)
    return app


async def _show_identity(request: web.Request) -> web.Response:
    identity = {
        name: value
        for name, value in request.headers.items()
        if normalise_header_name(name).startswith(IDENTITY_HEADER_PREFIX)
        and normalise_header_name(name) != ASSERTION.lower()
    }
    token = request.headers.get(ASSERTION)
    check = (
        await request.app[VERIFIER].check(token)
        if token
        else AssertionCheck(
            verified=False,
            detail="no assertion: this request did not come through the gateway",
            claims={},
        )
    )
    lines = [
        "brokergate demo portal (the upstream)",
        f"{request.method} {request.path_qs}",
        "",
        # The client address the gateway saw (behind HAProxy with PROXY protocol too).
        f"Client address (X-Forwarded-For): {request.headers.get('X-Forwarded-For', '-')}",
        "",
        "Identity headers received:" if identity else "No identity headers received.",
        *(f"  {name}: {value}" for name, value in sorted(identity.items())),
        "",
        f"Signed assertion ({ASSERTION}): {check.detail}",
        *(f"  {k}: {v}" for k, v in sorted(check.claims.items())),
    ]
    if "text/html" in request.headers.get("Accept", ""):
        body = "<!doctype html><meta charset=utf-8><title>brokergate demo portal</title>"
        body += f"<pre>{html.escape(chr(10).join(lines))}</pre>"
        body += '<p><a href="/_gateway/account">My account (gateway)</a></p>'
        return web.Response(text=body, content_type="text/html")
    return web.Response(text="\n".join(lines) + "\n")
