"""The headers through which the gateway tells the upstream who is there.

# SECURITY: the proxy strips every client-sent header that normalises (lower-case,
# "_" → "-") to a name starting with IDENTITY_HEADER_PREFIX before adding its own,
# so no spelling of these names from a client can reach the upstream.
"""

from __future__ import annotations

IDENTITY_HEADER_PREFIX = "x-brokergate-"

BROKER_NUMBER = "X-Brokergate-Broker-Number"
USER_ID = "X-Brokergate-User-Id"
EMAIL = "X-Brokergate-Email"
LEVEL = "X-Brokergate-Level"
METHOD = "X-Brokergate-Method"  # certificate, totp, passkey, email-tan, password
CERT_SERIAL = "X-Brokergate-Cert-Serial"
CERT_NOT_AFTER = "X-Brokergate-Cert-Not-After"  # RFC 3339, UTC
ASSERTION = "X-Brokergate-Assertion"  # signed JWT; keys at /.well-known/jwks.json


def normalise_header_name(name: str) -> str:
    """Lower-case with underscores as hyphens (some servers treat ``X_Foo`` as ``X-Foo``)."""
    return name.strip().lower().replace("_", "-")


def is_identity_header(name: str) -> bool:
    return normalise_header_name(name).startswith(IDENTITY_HEADER_PREFIX)
