"""The headers through which the gateway tells the upstream who is there: names and values.

# SECURITY: the proxy strips every client-sent header that normalises (lower-case,
# "_" → "-") to a name starting with IDENTITY_HEADER_PREFIX before adding its own,
# so no spelling of these names from a client can reach the upstream.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.auth._certificate_identity import Identity
from store import days_until_expiry, reminder_banner_due

__all__ = [
    "ASSERTION",
    "BROKER_NUMBER",
    "CERT_DAYS_LEFT",
    "CERT_NOT_AFTER",
    "CERT_SERIAL",
    "EMAIL",
    "HEAD_OFFICE_NUMBER",
    "IDENTITY_HEADER_PREFIX",
    "LEVEL",
    "METHOD",
    "OFFICE_NUMBER",
    "RENEWAL_URL",
    "RIGHTS",
    "ROLE",
    "USER_ID",
    "RenewalFacts",
    "identity_headers",
    "is_identity_header",
    "normalise_header_name",
    "renewal_facts",
]

IDENTITY_HEADER_PREFIX = "x-brokergate-"

BROKER_NUMBER = "X-Brokergate-Broker-Number"
USER_ID = "X-Brokergate-User-Id"
EMAIL = "X-Brokergate-Email"
LEVEL = "X-Brokergate-Level"
METHOD = "X-Brokergate-Method"  # certificate, totp, passkey, email-tan, password
CERT_SERIAL = "X-Brokergate-Cert-Serial"
CERT_NOT_AFTER = "X-Brokergate-Cert-Not-After"  # RFC 3339, UTC
# Calendar days until the presented certificate expires, in the brokers' zone (issue 15)
CERT_DAYS_LEFT = "X-Brokergate-Cert-Days-Left"
# Only inside the reminder window: where the broker renews (a portal may show its banner)
RENEWAL_URL = "X-Brokergate-Renewal-Url"
# The firm (issue 13): the user's office, the firm's head office (the broker number), the
# role (head | employee; absent for a restricted session) and the effective rights
# (comma-separated sorted catalogue keys, e.g. "DIL,ORV"; empty or absent: none).
OFFICE_NUMBER = "X-Brokergate-Office-Number"
HEAD_OFFICE_NUMBER = "X-Brokergate-Head-Office-Number"
ROLE = "X-Brokergate-Role"
RIGHTS = "X-Brokergate-Rights"
ASSERTION = "X-Brokergate-Assertion"  # signed JWT; keys at /.well-known/jwks.json


def normalise_header_name(name: str) -> str:
    """Lower-case with underscores as hyphens (some servers treat ``X_Foo`` as ``X-Foo``)."""
    return name.strip().lower().replace("_", "-")


def is_identity_header(name: str) -> bool:
    return normalise_header_name(name).startswith(IDENTITY_HEADER_PREFIX)


@functools.lru_cache(maxsize=4096)  # a broker's not-after, formatted once, not per request
def _rfc3339(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, kw_only=True)
class RenewalFacts:
    """What the portal is told about the presented certificate's renewal."""

    days_left: int
    renewal_url: str | None  # set inside the reminder window only


def renewal_facts(
    identity: Identity,
    *,
    now: datetime,
    zone: ZoneInfo,
    account_url: str,
    window_days: int,
) -> RenewalFacts | None:
    """The renewal facts of ``identity``'s presented certificate (None: none presented)."""
    if identity.cert_not_after is None:
        return None
    due = reminder_banner_due(identity.cert_not_after, now, window_days)
    return RenewalFacts(
        days_left=days_until_expiry(identity.cert_not_after, now, zone),
        renewal_url=account_url + "#certificate" if due else None,
    )


def identity_headers(
    identity: Identity, assertion: str, renewal: RenewalFacts | None = None
) -> dict[str, str]:
    """The values of the headers the upstream gets for ``identity`` (and its assertion)."""
    values = {
        BROKER_NUMBER: identity.broker_number,
        USER_ID: str(identity.user_id),
        EMAIL: identity.email,
        LEVEL: identity.level.value,
        METHOD: identity.method,
        ASSERTION: assertion,
    }
    firm = identity.firm
    if firm is not None:
        values[OFFICE_NUMBER] = firm.office_number
        values[HEAD_OFFICE_NUMBER] = firm.head_office_number
        values[RIGHTS] = ",".join(firm.rights)
        if firm.role is not None:
            values[ROLE] = firm.role
    if identity.cert_serial is not None and identity.cert_not_after is not None:
        values[CERT_SERIAL] = identity.cert_serial
        values[CERT_NOT_AFTER] = _rfc3339(identity.cert_not_after)
    if renewal is not None:
        values[CERT_DAYS_LEFT] = str(renewal.days_left)
        if renewal.renewal_url is not None:
            values[RENEWAL_URL] = renewal.renewal_url
    return values
