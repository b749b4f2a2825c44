"""The identity the upstream receives: headers plus a short-lived signed assertion (JWT).

Signing keys (ES256, P-256) live in ``store.AssertionKey`` so that every replica signs
with the same keys and serves the same JWKS at ``/.well-known/jwks.json``; the private key
is sealed with ``store.Sealer`` purpose ``"assertion"``. ES256 rather than EdDSA: joserfc
(our JOSE library) flags EdDSA as "not recommended" by default, and ES256 is what most
upstream JWT libraries verify out of the box.

The first replica to start creates a key; if two race, both keys are kept and every
replica signs with the oldest live key (deterministic), while JWKS lists all live keys.

Claims: ``iss`` = the gateway's public URL, ``aud`` = the upstream URL, ``sub`` = user id,
``iat``/``nbf``/``exp`` (``assertion_lifetime``, default 60 s), ``jti``, and
``broker_number``, ``email``, ``level``, ``amr`` (the login method), ``cert_serial``,
``cert_not_after`` when a certificate was used, and the firm (issue 13): ``office_number``,
``head_office_number``, ``rights`` (a sorted list of catalogue keys) and ``role``
(``head`` | ``employee``; left out for a restricted session, which has no role).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.auth._certificate_identity import Identity
from gateway.proxy._identity_headers import RenewalFacts
from store import AssertionKey, Sealer, transaction

__all__ = [
    "ASSERTION_ALGORITHM",
    "ASSERTION_PURPOSE",
    "SIGNER",
    "AssertionSigner",
]

ASSERTION_ALGORITHM = "ES256"
ASSERTION_PURPOSE = "assertion"  # Sealer purpose of the private keys
REUSE_WINDOW = timedelta(seconds=5)  # one signature serves an identity's requests for ≤ 5 s
_RECENT_LIMIT = 10_000


@dataclass(frozen=True, kw_only=True)
class _Key:
    kid: str
    private: ECKey
    public_jwk: Mapping[str, Any]


class AssertionSigner:
    """Signs identity assertions; owns an in-memory copy of the live keys.

    Args:
        factory: the store's session factory.
        sealer: ``Sealer(secret=store.secret_key, purpose=ASSERTION_PURPOSE)``.
        issuer: ``iss`` (the gateway's public URL).
        audience: ``aud`` (the upstream's URL).
        lifetime: validity of one assertion.
    """

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        sealer: Sealer,
        issuer: str,
        audience: str,
        lifetime: timedelta,
    ) -> None:
        self._factory = factory
        self._sealer = sealer
        self._issuer = issuer
        self._audience = audience
        self._lifetime = lifetime
        self._keys: list[_Key] = []
        self._lock = threading.Lock()
        # Signing costs ~0.25 ms (ES256 + JOSE): per request it would cap a core at ~4k req/s.
        # An assertion is reused for the same identity for a short window instead; its
        # iat/exp stay those of its signing, so the upstream's view of freshness is exact.
        self._reuse = min(REUSE_WINDOW, lifetime / 4)
        self._recent: dict[tuple[object, ...], tuple[datetime, str]] = {}

    def ensure_key(self, now: datetime) -> None:
        """Create a key if the store has none, then load the live keys (blocking)."""
        with transaction(self._factory) as db:
            live = db.scalars(select(AssertionKey).where(AssertionKey.retired_at.is_(None))).first()
            if live is None:
                key = ECKey.generate_key("P-256")
                kid = key.thumbprint()
                db.add(
                    AssertionKey(
                        kid=kid,
                        algorithm=ASSERTION_ALGORITHM,
                        private_key_sealed=self._sealer.seal(key.as_pem(private=True)),
                        public_jwk={
                            **key.as_dict(private=False),
                            "kid": kid,
                            "alg": ASSERTION_ALGORITHM,
                            "use": "sig",
                        },
                        created_at=now,
                        retired_at=None,
                    )
                )
        self.reload()

    def reload(self) -> None:
        """Re-read the live keys (another replica may have added one)."""
        with self._factory() as db:
            rows = list(
                db.scalars(
                    select(AssertionKey)
                    .where(AssertionKey.retired_at.is_(None))
                    .order_by(AssertionKey.created_at, AssertionKey.kid)
                )
            )
            keys = [
                _Key(
                    kid=row.kid,
                    private=ECKey.import_key(self._sealer.open(row.private_key_sealed)),
                    public_jwk=dict(row.public_jwk),
                )
                for row in rows
            ]
        with self._lock:
            self._keys = keys

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWK Set (RFC 7517 §5)."""
        with self._lock:
            return {"keys": [dict(k.public_jwk) for k in self._keys]}

    def sign(self, identity: Identity, now: datetime, renewal: RenewalFacts | None = None) -> str:
        """A compact JWS for ``identity``, valid for the configured lifetime from its signing.

        The same token is returned for the same identity within the reuse window
        (``jti`` therefore names an assertion, not a request).
        """
        return self.sign_reusable(identity, now, renewal)[0]

    def sign_reusable(
        self, identity: Identity, now: datetime, renewal: RenewalFacts | None = None
    ) -> tuple[str, datetime]:
        """``sign``'s token and the instant until which it is handed out again (the end of
        its reuse window): a caller may keep it for ``identity`` until then, not longer."""
        cache_key = (*vars(identity).values(), renewal)
        with self._lock:
            if not self._keys:
                raise RuntimeError("no assertion key loaded; call ensure_key() at start-up")
            key = self._keys[0]
            recent = self._recent.get(cache_key)
            if recent is not None and timedelta(0) <= now - recent[0] < self._reuse:
                return recent[1], recent[0] + self._reuse
        issued = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(identity.user_id),
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(self._lifetime.total_seconds()),
            "jti": secrets.token_urlsafe(16),
            "broker_number": identity.broker_number,
            "email": identity.email,
            "level": identity.level.value,
            "amr": [identity.method],
        }
        firm = identity.firm
        if firm is not None:
            claims["office_number"] = firm.office_number
            claims["head_office_number"] = firm.head_office_number
            claims["rights"] = list(firm.rights)
            if firm.role is not None:
                claims["role"] = firm.role
        if identity.cert_serial is not None and identity.cert_not_after is not None:
            claims["cert_serial"] = identity.cert_serial
            claims["cert_not_after"] = identity.cert_not_after.isoformat()
        if renewal is not None:
            claims["cert_days_left"] = renewal.days_left
            if renewal.renewal_url is not None:
                claims["renewal_url"] = renewal.renewal_url
        header = {"alg": ASSERTION_ALGORITHM, "kid": key.kid, "typ": "JWT"}
        token = jwt.encode(header, claims, key.private, algorithms=[ASSERTION_ALGORITHM])
        with self._lock:
            if len(self._recent) >= _RECENT_LIMIT:
                self._recent.clear()
            self._recent[cache_key] = (now, token)
        return token, now + self._reuse


SIGNER = web.AppKey("signer", AssertionSigner)
"""The app's assertion signer (opened in ``gateway._app``'s cleanup_ctx)."""
