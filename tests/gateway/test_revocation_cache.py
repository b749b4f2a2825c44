"""The trust cache: polling picks up revocations, users and generations; staleness fails closed."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import update

from ca import load_trust_material
from gateway.auth._trust_cache import MISS, CacheEntry, TrustCache
from store import CertificateStatus, User, UserStatus, transaction
from tests.gateway.conftest import Brokers


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_cache(brokers: Brokers, ticker: Ticker, changes: list[Any] | None = None) -> TrustCache:
    return TrustCache(
        factory=brokers.sessions,
        trust_loader=load_trust_material,
        max_staleness=dt.timedelta(seconds=4),
        on_trust_change=(changes.append if changes is not None else None),
        monotonic=ticker,
    )


def test_revocation_and_user_changes_are_polled(brokers: Brokers) -> None:
    ticker = Ticker()
    cache = make_cache(brokers, ticker)
    assert cache.get("00" * 32) is MISS  # never refreshed: stale
    cache.refresh()
    user = brokers.user()
    cert = brokers.issue(user)
    assert cache.get(cert.fingerprint) is MISS
    entry = cache.load(cert.fingerprint)
    assert entry.record is not None and entry.record.status is CertificateStatus.VALID
    assert cache.get(cert.fingerprint) == entry  # now served from memory
    unknown = cache.load("ff" * 32)
    assert unknown.record is None and isinstance(cache.get("ff" * 32), CacheEntry)  # negative cache
    brokers.revoke(cert.serial)
    cached = cache.get(cert.fingerprint)
    assert isinstance(cached, CacheEntry) and cached.record is not None
    assert cached.record.revoked_at is None  # not yet polled
    cache.refresh()
    polled = cache.get(cert.fingerprint)
    assert isinstance(polled, CacheEntry) and polled.record is not None
    assert (
        polled.record.revoked_at is not None and polled.record.status is CertificateStatus.REVOKED
    )
    with transaction(brokers.sessions) as db:
        db.execute(update(User).where(User.id == user).values(status=UserStatus.DISABLED))
    cache.refresh()
    again = cache.get(cert.fingerprint)
    assert isinstance(again, CacheEntry) and again.user is not None
    assert again.user.status is UserStatus.DISABLED


def test_late_revocation_inside_the_overlap_is_seen(brokers: Brokers, clock) -> None:
    """A revocation stamped earlier than the newest one seen (a lagging replica's clock)."""
    ticker = Ticker()
    cache = make_cache(brokers, ticker)
    a = brokers.issue(brokers.user())
    b = brokers.issue(brokers.user())
    cache.refresh()
    cache.load(a.fingerprint)
    brokers.revoke(b.serial)  # at clock()
    cache.refresh()  # watermark = clock()
    clock.now -= dt.timedelta(minutes=5)  # the next revocation is stamped 5 minutes earlier
    brokers.revoke(a.serial)
    cache.refresh()
    entry = cache.get(a.fingerprint)
    assert isinstance(entry, CacheEntry) and entry.record is not None
    assert entry.record.status is CertificateStatus.REVOKED


def test_stale_cache_sends_every_lookup_to_the_store(brokers: Brokers) -> None:
    ticker = Ticker()
    cache = make_cache(brokers, ticker)
    cache.refresh()
    cert = brokers.issue(brokers.user())
    cache.load(cert.fingerprint)
    assert isinstance(cache.get(cert.fingerprint), CacheEntry)
    ticker.now += 4.5  # no successful refresh for longer than max_staleness
    assert not cache.fresh
    assert cache.get(cert.fingerprint) is MISS
    cache.refresh()
    assert isinstance(cache.get(cert.fingerprint), CacheEntry)


def test_generation_changes_reload_trust(brokers: Brokers) -> None:
    ticker = Ticker()
    changes: list[Any] = []
    cache = make_cache(brokers, ticker, changes)
    cache.refresh()
    assert len(changes) == 1 and set(changes[0].issuing_by_generation) == {1}
    cache.refresh()
    assert len(changes) == 1  # nothing changed, nothing reloaded
    brokers.authority.rotate("test")
    cache.refresh()
    assert len(changes) == 2 and set(changes[1].issuing_by_generation) == {1, 2}
    brokers.authority.retire(1, "test", force=True)
    cache.refresh()
    assert len(changes) == 3 and set(changes[2].issuing_by_generation) == {2}
    assert 1 in cache.retired_generations
