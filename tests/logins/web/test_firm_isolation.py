"""Isolation of the head users' pages (issue 13): every admin URL and form, tried with another
firm's ids and with ids of offices the actor does not administer, gets the SAME refusal as
a page that does not exist (404, the same page), and nothing in the store changes.

Runs on SQLite and PostgreSQL (the ``db_url`` fixture; PostgreSQL skips with its reason
when the server at 127.0.0.1:5432 is not reachable).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import FakeClock
from tests.logins.web.firm_world import World, build_world, snapshot, strong_login

P = "/_gateway/firm"
MISSING = 999_999_999  # no such id in any firm


def _user_requests(uid: int | str) -> list[tuple[str, str, dict[str, str]]]:
    edit = {"name": "Changed Name", "email": "changed@example.org", "right": "DIP"}
    return [
        ("GET", f"{P}/users/{uid}", {}),
        ("POST", f"{P}/users/{uid}", edit),
        ("POST", f"{P}/users/{uid}/deactivate", {}),
        ("POST", f"{P}/users/{uid}/reactivate", {}),
        ("POST", f"{P}/users/{uid}/activation", {}),
    ]


def _office_requests(oid: int | str) -> list[tuple[str, str, dict[str, str]]]:
    edit = {
        "name": "Changed Office",
        "number": "X-9",
        "email": "changed-office@example.org",
        "city": "Elsewhere",
        "right": "DIP",
    }
    new_user = {"name": "Planted User", "email": "planted@example.org", "office": str(oid)}
    return [
        ("GET", f"{P}/offices/{oid}", {}),
        ("POST", f"{P}/offices/{oid}", edit),
        ("POST", f"{P}/offices/{oid}/deactivate", {}),
        ("POST", f"{P}/offices/{oid}/reactivate", {}),
        ("POST", f"{P}/offices/{oid}/delete", {}),
        ("POST", f"{P}/users/new", new_user),  # the office id in a form
    ]


_BACK = re.compile(r'<input type="hidden" name="back" value="[^"]*">')


def _normalised(body: str) -> str:
    """The page without the language switch's return path (it names the URL asked for)."""
    return _BACK.sub("", body)


async def _refused_everywhere(
    b: Any,
    sessions: sessionmaker[Session],
    requests: list[tuple[str, str, dict[str, str]]],
) -> None:
    # The reference: an id that exists nowhere, and a page of ours that does not exist.
    await b.get(f"{P}/users")  # a page with the CSRF token (the list or the refusal)
    csrf = b.csrf()
    _, reference = await b.get(f"{P}/users/{MISSING}")
    status, nowhere = await b.get("/_gateway/no-such-page")
    assert status == 404
    assert _normalised(reference) == _normalised(nowhere)
    before = snapshot(sessions)
    for method, path, form in requests:
        if method == "GET":
            status, body = await b.get(path, follow=False)
        else:
            status, body, _ = await b.post(path, {**form, "csrf": csrf}, follow=False)
        assert status == 404, (method, path, status, body[:300])
        assert _normalised(body) == _normalised(nowhere), (method, path)
    assert snapshot(sessions) == before


def _foreign_for_head_office(world: World) -> list[tuple[str, str, dict[str, str]]]:
    u, o = world.users, world.offices
    requests: list[tuple[str, str, dict[str, str]]] = []
    for uid in (u["hb"], u["eb"], u["sbh"], MISSING, "abc", "-1", "1e3", "0"):
        requests += _user_requests(uid)
    for oid in (o["HB"], o["SB"], MISSING, "abc"):
        requests += _office_requests(oid)
    # Its own head office is no sub-office: not on the sub-office pages.
    requests += [r for r in _office_requests(o["HA"]) if "/users/new" not in r[1]]
    return requests


async def test_head_office_head_user_cannot_reach_another_firm(
    gateway: Any, browser_for: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    b = browser_for(gw)
    await strong_login(b, world.email("ha"), clock, sessions)
    status, body = await b.get(f"{P}/users")
    assert status == 200 and "User EA" in body and "User S1E" in body  # the own firm: yes
    assert "User HB" not in body and "User EB" not in body and "User SBH" not in body
    status, body = await b.get(f"{P}/offices")
    assert status == 200 and "Office S1" in body and "Office SB" not in body
    await _refused_everywhere(b, sessions, _foreign_for_head_office(world))


async def test_sub_office_head_user_manages_only_that_office(
    gateway: Any, browser_for: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    u, o = world.users, world.offices
    b = browser_for(gw)
    await strong_login(b, world.email("s1h"), clock, sessions)
    status, body = await b.get(f"{P}/users")
    assert status == 200 and "User S1E" in body
    assert "User HA" not in body and "User EA" not in body and "User S2H" not in body
    requests: list[tuple[str, str, dict[str, str]]] = []
    # the head office's users, the sibling sub-office's, another firm's
    for uid in (u["ha"], u["ea"], u["s2h"], u["hb"], u["eb"], u["sbh"]):
        requests += _user_requests(uid)
    # no sub-office pages at all for a sub-office's head user, not even for its own office
    requests += [("GET", f"{P}/offices", {}), ("GET", f"{P}/offices/new", {})]
    requests += [("POST", f"{P}/offices/new", {"name": "N", "number": "9", "email": "n@e.org"})]
    for oid in (o["S1"], o["S2"], o["HA"], o["HB"], o["SB"]):
        requests += [r for r in _office_requests(oid) if "/users/new" not in r[1]]
    # a new user only in its own office
    for oid in (o["HA"], o["S2"], o["HB"], o["SB"]):
        requests.append(
            ("POST", f"{P}/users/new", {"name": "P", "email": "p@example.org", "office": str(oid)})
        )
    await _refused_everywhere(b, sessions, requests)


async def test_employee_gets_the_refusal_for_every_admin_page(
    gateway: Any, browser_for: Any, sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    gw = await gateway()
    world = build_world(sessions, clock)
    u, o = world.users, world.offices
    b = browser_for(gw)
    await strong_login(b, world.email("ea"), clock, sessions)
    requests: list[tuple[str, str, dict[str, str]]] = [
        ("GET", f"{P}/users", {}),
        ("GET", f"{P}/users/new", {}),
        ("GET", f"{P}/offices", {}),
        ("GET", f"{P}/offices/new", {}),
        ("POST", f"{P}/offices/new", {"name": "N", "number": "9", "email": "n@e.org"}),
    ]
    for uid in (u["ea"], u["ha"], u["s1e"], u["hb"]):
        requests += _user_requests(uid)
    for oid in (o["HA"], o["S1"], o["HB"]):
        requests += _office_requests(oid)
    await _refused_everywhere(b, sessions, requests)
    status, body = await b.get("/_gateway/account")
    assert status == 200 and f"{P}/users" not in body  # no "Users" in the menu either
