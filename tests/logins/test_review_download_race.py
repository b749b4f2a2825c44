"""Found in review: the download rate limit held under concurrent requests (PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ca import CertificateAuthority
from gateway.logins import LoginSettings, TooSoon
from gateway.logins._certificates import download_certificate
from tests.conftest import FakeClock, UserFactory


def test_concurrent_downloads_respect_the_daily_limit(
    db_url: str,
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    """Two downloads at once (double click, two tabs, a script) both counted the earlier
    downloads before either had committed, so both were issued past the limit. The user's
    row is now locked while counting. (SQLite serialises writers on its own.)"""
    if not db_url.startswith("postgresql"):
        pytest.skip("the race needs concurrent writers (PostgreSQL)")
    user = make_user()
    settings = LoginSettings(downloads_per_day=1)
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def run() -> None:
        start.wait(timeout=10)
        try:
            download_certificate(
                sessions,
                authority=authority,
                user_id=user.id,
                settings=settings,
                client_addr="127.0.0.1",
                now=clock(),
            )
            outcomes.append("issued")
        except TooSoon:
            outcomes.append("refused")

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["issued", "refused", "refused", "refused"], outcomes
