"""The trust cache reads users as plain columns (issue 13 made ORM loading two thirds of a
refresh); what it keeps must be what ``ca``'s rules on the ORM objects say: effective rights,
login refusal and whom to ask, for every kind of user in a firm. On SQLite and PostgreSQL."""

from __future__ import annotations

from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from ca import (
    FirmSettings,
    create_sub_office,
    create_user,
    effective_rights,
    login_refusal,
    set_office_active,
    set_user_active,
)
from gateway.auth._certificate_identity import UserRecord
from gateway.auth._trust_cache import TrustCache, TrustMaterialLike
from store import Office, User, UserRole, UserStatus, transaction
from tests.conftest import FakeClock

FIRMS = FirmSettings()


def _no_trust(db: Session) -> TrustMaterialLike:
    raise AssertionError("no CA generations in these tests: trust material is never loaded")


def _firm(session: Session, clock: FakeClock) -> dict[str, User]:
    user = partial(
        create_user, session, broker_number="60/123/4567", now=clock(), actor="test", firms=FIRMS
    )

    head = user(email="head@firm.example.org", name="Nick Hoofd")
    office = head.office
    sub = create_sub_office(
        session,
        head_office=office,
        number="S1",
        name="Sub 1",
        email="s1@firm.example.org",
        rights=["DIP", "DIL"],
        firms=FIRMS,
        now=clock(),
        actor="test",
    )
    closed = create_sub_office(
        session,
        head_office=office,
        number="S2",
        name="Sub 2",
        email="s2@firm.example.org",
        rights=["DIP"],
        firms=FIRMS,
        now=clock(),
        actor="test",
    )
    people = {
        "head": head,
        "employee": user(email="ilse@firm.example.org", name="Ilse", rights=["DIP", "ORV"]),
        "sub_head": user(
            email="sub.head@firm.example.org", name="Sam", office=sub, role=UserRole.HEAD
        ),
        "sub_employee": user(
            email="sub.emp@firm.example.org", name="Eva", office=sub, rights=["DIL"]
        ),
        "orphan": user(
            email="orphan@firm.example.org", name="Olaf", office=closed
        ),  # no head user there
        "pending": user(email="pending@firm.example.org", name="Pia", status=UserStatus.PENDING),
        "disabled": user(email="gone@firm.example.org", name="Gerd"),
    }
    set_user_active(session, people["disabled"], False, now=clock(), actor="test")
    set_office_active(session, closed, False, now=clock(), actor="test")
    return people


def test_every_cached_user_matches_the_rules(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    with transaction(sessions) as session:
        ids = {name: u.id for name, u in _firm(session, clock).items()}
    cache = TrustCache(factory=sessions, trust_loader=_no_trust)
    records = {name: cache.load_user(user_id) for name, user_id in ids.items()}
    with sessions() as session:
        for name, user_id in ids.items():
            user = session.get(User, user_id)
            record = records[name]
            assert user is not None and record is not None and record.firm is not None, name
            assert record.firm.rights == tuple(sorted(effective_rights(user))), name
            assert record.refusal == login_refusal(user, session), name
            assert record.firm.office_number == user.office.number, name
            head_office = user.office.head_office or user.office
            assert record.firm.head_office_number == head_office.number, name
            assert record.firm.role == user.role.value, name
    contact = {name: r.firm.rights_contact for name, r in records.items() if r and r.firm}
    assert contact["head"] is None  # the broker support
    assert contact["employee"] == "Nick Hoofd"
    assert contact["sub_head"] == "Nick Hoofd"
    assert contact["sub_employee"] == "Sam"
    assert contact["orphan"] == "Nick Hoofd"  # the sub-office has no head user
    refused = {name for name, r in records.items() if r and not r.may_log_in}
    assert refused == {"orphan", "pending", "disabled"}
    orphan = records["orphan"]
    assert orphan is not None and orphan.refusal is not None
    assert orphan.refusal.reason == "office_inactive"


def test_a_refresh_sees_an_office_closed_and_reopened(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    with transaction(sessions) as session:
        people = _firm(session, clock)
        employee = people["sub_employee"].id
        office_id = people["sub_employee"].office_id
    cache = TrustCache(factory=sessions, trust_loader=_no_trust)
    assert cache.load_user(employee) is not None
    cache.refresh()
    first = cache.user(employee)
    assert isinstance(first, UserRecord) and first.may_log_in
    for active, reason in ((False, "office_inactive"), (True, None)):
        with transaction(sessions) as session:
            office = session.get(Office, office_id)
            assert office is not None
            set_office_active(session, office, active, now=clock(), actor="test")
        cache.refresh()
        record = cache.user(employee)
        assert isinstance(record, UserRecord)
        assert (record.refusal.reason if record.refusal else None) == reason
