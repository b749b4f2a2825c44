"""The identity headers are built once per identity and reused assertion (issue 11), and
never outlive what they say: a changed identity, level or certificate gets fresh headers
and a fresh assertion; the reuse window, a local midnight and the reminder window's edges
end an entry."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import Engine

from gateway.auth._certificate_identity import FirmFacts, Identity
from gateway.proxy._assertion import ASSERTION_PURPOSE, AssertionSigner
from gateway.proxy._identity_cache import IdentityHeaderCache, renewal_facts_until
from gateway.proxy._identity_headers import (
    ASSERTION,
    CERT_DAYS_LEFT,
    LEVEL,
    OFFICE_NUMBER,
    RENEWAL_URL,
    RIGHTS,
    ROLE,
    identity_headers,
    renewal_facts,
)
from store import Level, Sealer, session_factory
from tests.conftest import TEST_SECRET_KEY

BERLIN = ZoneInfo("Europe/Berlin")
ACCOUNT = "https://portal.example/_gateway/account"
WINDOW = 60
START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
FIRM = FirmFacts(
    office_number="60/123/4567",
    head_office_number="60/123/4567",
    role="head",
    rights=("DIL", "ORV"),
)


def _identity(**changes: object) -> Identity:
    base = Identity(
        user_id=7,
        broker_number="60/123/4567",
        email="erika@example.org",
        name="Erika Mustermann",
        locale="de",
        level=Level.STRONG,
        method="certificate",
        cert_serial="0a1b",
        cert_not_after=datetime(2027, 6, 1, 12, 0, tzinfo=UTC),
        cert_fingerprint="ab" * 32,
        firm=FIRM,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def signer(sqlite_engine: Engine) -> AssertionSigner:
    made = AssertionSigner(
        factory=session_factory(sqlite_engine),
        sealer=Sealer(secret=TEST_SECRET_KEY, purpose=ASSERTION_PURPOSE),
        issuer="https://gateway.example",
        audience="http://portal.internal",
        lifetime=timedelta(seconds=60),
    )
    made.ensure_key(START)
    return made


@pytest.fixture
def cache(signer: AssertionSigner) -> IdentityHeaderCache:
    return IdentityHeaderCache(signer=signer, zone=BERLIN, account_url=ACCOUNT, window_days=WINDOW)


def _uncached(signer: AssertionSigner, identity: Identity, now: datetime) -> dict[str, str]:
    """What the handler built per request before the cache."""
    renewal = renewal_facts(identity, now=now, zone=BERLIN, account_url=ACCOUNT, window_days=WINDOW)
    return identity_headers(identity, signer.sign(identity, now, renewal), renewal)


def test_the_same_headers_as_built_per_request(
    cache: IdentityHeaderCache, signer: AssertionSigner
) -> None:
    identity = _identity()
    for offset in (0, 1, 4):
        now = START + timedelta(seconds=offset)
        assert cache.headers(identity, now) == _uncached(signer, identity, now)


def test_reused_within_the_window_then_signed_afresh(
    cache: IdentityHeaderCache, signer: AssertionSigner
) -> None:
    identity = _identity()
    first = cache.headers(identity, START)
    assert cache.headers(identity, START + timedelta(seconds=4))[ASSERTION] == first[ASSERTION]
    later = cache.headers(identity, START + timedelta(seconds=5))
    assert later[ASSERTION] != first[ASSERTION]
    claims = jwt.decode(
        later[ASSERTION], KeySet.import_key_set(signer.jwks()), algorithms=["ES256"]
    )
    assert claims.claims["iat"] == int((START + timedelta(seconds=5)).timestamp())


@pytest.mark.parametrize(
    "change",
    [
        {"level": Level.BASIC, "method": "password"},
        {"user_id": 8},
        {"email": "other@example.org"},
        {"cert_serial": "0c0d", "cert_fingerprint": "cd" * 32},
        {"cert_serial": None, "cert_not_after": None, "cert_fingerprint": None},
        {"firm": dataclasses.replace(FIRM, rights=("DIL",))},
        {"firm": dataclasses.replace(FIRM, role="employee", office_number="60/123/4567-1")},
        {"firm": FIRM.firm_level(), "level": Level.RESTRICTED, "method": "email-tan"},
    ],
)
def test_a_changed_identity_gets_fresh_headers_and_assertion(
    cache: IdentityHeaderCache, signer: AssertionSigner, change: dict[str, object]
) -> None:
    before = cache.headers(_identity(), START)
    changed = _identity(**change)
    now = START + timedelta(seconds=1)
    after = cache.headers(changed, now)
    assert after[ASSERTION] != before[ASSERTION]
    keys = KeySet.import_key_set(signer.jwks())
    claims = jwt.decode(after[ASSERTION], keys, algorithms=["ES256"]).claims
    assert claims["sub"] == str(changed.user_id)
    assert claims["level"] == changed.level.value
    assert claims["email"] == changed.email
    assert claims.get("cert_serial") == changed.cert_serial
    assert after[LEVEL] == changed.level.value
    assert changed.firm is not None
    assert claims["rights"] == list(changed.firm.rights)
    assert claims.get("role") == changed.firm.role
    assert after[RIGHTS] == ",".join(changed.firm.rights)
    assert after.get(ROLE) == changed.firm.role
    assert after[OFFICE_NUMBER] == changed.firm.office_number


def test_days_left_change_at_local_midnight_even_inside_the_window(
    cache: IdentityHeaderCache,
) -> None:
    identity = _identity()
    before_midnight = datetime(2026, 11, 25, 22, 59, 58, tzinfo=UTC)  # 23:59:58 in Berlin
    first = cache.headers(identity, before_midnight)
    second = cache.headers(identity, before_midnight + timedelta(seconds=3))  # 00:00:01
    assert int(second[CERT_DAYS_LEFT]) == int(first[CERT_DAYS_LEFT]) - 1


def test_renewal_url_appears_when_the_reminder_window_opens(cache: IdentityHeaderCache) -> None:
    identity = _identity()
    assert identity.cert_not_after is not None
    opens = identity.cert_not_after - timedelta(days=WINDOW)
    assert RENEWAL_URL not in cache.headers(identity, opens - timedelta(seconds=1))
    assert cache.headers(identity, opens)[RENEWAL_URL] == ACCOUNT + "#certificate"


def test_a_clock_set_back_is_not_served_from_the_cache(cache: IdentityHeaderCache) -> None:
    identity = _identity()
    first = cache.headers(identity, START)
    earlier = cache.headers(identity, START - timedelta(seconds=1))
    assert earlier[ASSERTION] != first[ASSERTION]


def test_callers_cannot_change_the_cached_headers(cache: IdentityHeaderCache) -> None:
    identity = _identity()
    cache.headers(identity, START)[LEVEL] = "tampered"
    assert cache.headers(identity, START)[LEVEL] == "strong"


def test_renewal_facts_until() -> None:
    not_after = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
    assert renewal_facts_until(None, START, zone=BERLIN, window_days=WINDOW) is None
    # 2026-11-25 10:00 in Berlin: the next change is midnight there (23:00 UTC)
    assert renewal_facts_until(not_after, START, zone=BERLIN, window_days=WINDOW) == datetime(
        2026, 11, 25, 23, 0, tzinfo=UTC
    )
    opens = not_after - timedelta(days=WINDOW)
    just_before = opens - timedelta(minutes=1)
    assert renewal_facts_until(not_after, just_before, zone=BERLIN, window_days=WINDOW) == opens
    last = not_after - timedelta(seconds=1)
    assert renewal_facts_until(not_after, last, zone=BERLIN, window_days=WINDOW) == not_after
    # after expiry only midnights remain (days_left stays 0, no renewal URL)
    after = not_after + timedelta(days=1)
    assert renewal_facts_until(not_after, after, zone=BERLIN, window_days=WINDOW) == datetime(
        2027, 6, 2, 22, 0, tzinfo=UTC
    )
