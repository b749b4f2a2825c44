"""A store outage on the login pages shows the 'store unavailable' page (503), not a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


async def test_a_store_outage_on_the_login_pages_is_the_store_page(
    gateway: Any, browser_for: Any, db_url: str, tmp_path: Path
) -> None:
    """The auth middleware turns store failures into the 'store unavailable' page (503),
    but the login pages' own store calls (and session writes) let the driver's
    OperationalError through as the generic 500 page."""
    import shutil

    from gateway._state import FACTORY

    if not db_url.startswith("sqlite"):
        pytest.skip("simulated by taking the SQLite file away")
    gw = await gateway()
    b = browser_for(gw)
    engine = gw.app[FACTORY].kw["bind"]
    database = Path(engine.url.database)
    engine.dispose()
    shutil.move(database, tmp_path / "away.db")  # the next connection finds no tables
    status, body = await b.get("/_gateway/login/password")
    assert status == 503, body
