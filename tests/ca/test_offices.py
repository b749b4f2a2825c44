"""Firms as office trees (issue 13): offices, head users, rights, who may log in, who may
manage whom. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ca import (
    DuplicateOffice,
    FirmSettings,
    InvalidOfficeData,
    InvalidUserData,
    NotPermitted,
    OfficeInUse,
    Product,
    RightNotInOffice,
    UnknownRight,
    administered_offices,
    authorise_office,
    authorise_user,
    create_sub_office,
    create_user,
    delete_office,
    effective_rights,
    head_office_of,
    login_refusal,
    set_office_active,
    set_user_active,
    set_user_rights,
    update_office,
    visible_users,
)
from store import AuditEvent, MailOutbox, Office, User, UserRole, UserStatus, transaction
from tests.conftest import FakeClock

FIRMS = FirmSettings()


def _firm(session: Session, clock: FakeClock, broker: str = "60/123/4567") -> tuple[User, Office]:
    head = create_user(
        session,
        broker_number=broker,
        email=f"head.{broker.replace('/', '')}@example.org",
        name="Nick Hoofd",
        now=clock(),
        actor="test",
    )
    return head, head.office


def _sub(session: Session, clock: FakeClock, head_office: Office, number: str = "S1") -> Office:
    return create_sub_office(
        session,
        head_office=head_office,
        number=number,
        name=f"Subkantoor {number}",
        email=f"{number.lower()}.{head_office.id}@example.org",
        city="Utrecht",
        rights=["DIP", "DIL"],
        firms=FIRMS,
        now=clock(),
        actor="test",
    )


def test_a_new_firm_gets_its_head_office_and_first_user_as_head_user(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    with transaction(sessions) as session:
        head, office = _firm(session, clock)
        employee = create_user(
            session,
            broker_number="60/123/4567",
            email="ilse@example.org",
            name="Ilse",
            rights=["dil", "DIP", "DIP"],
            now=clock(),
            actor="test",
        )
        assert office.is_head_office and office.number == "60/123/4567"
        assert office.rights == ["DIL", "DIP", "ORV"]
        assert head.role is UserRole.HEAD and head.rights == ["DIL", "DIP", "ORV"]
        assert employee.role is UserRole.EMPLOYEE and employee.office_id == office.id
        assert employee.rights == ["DIL", "DIP"]
        assert effective_rights(employee) == {"DIL", "DIP"}


def test_rights_are_checked_against_the_catalogue_and_bounded_by_the_office(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    with transaction(sessions) as session:
        _head, office = _firm(session, clock)
        sub = _sub(session, clock, office)
        with pytest.raises(UnknownRight, match=r"XYZ.*DIP, DIL, ORV"):
            create_user(
                session,
                broker_number="60/123/4567",
                email="x@example.org",
                name="X",
                rights=["XYZ"],
                now=clock(),
                actor="test",
            )
        with pytest.raises(RightNotInOffice, match="ORV"):
            create_user(
                session,
                broker_number="60/123/4567",
                email="x@example.org",
                name="X",
                office=sub,
                rights=["ORV"],
                now=clock(),
                actor="test",
            )
        with pytest.raises(RightNotInOffice):
            create_sub_office(
                session,
                head_office=office,
                number="S9",
                name="S9",
                email="s9@example.org",
                rights=["NEW"],
                firms=FirmSettings(
                    products=(*FIRMS.products, Product(key="NEW", de="n", en="n", nl="n"))
                ),
                now=clock(),
                actor="test",
            )
        # Nothing half-written: no user with that address exists.
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_sub_office_validation_and_uniqueness(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    with transaction(sessions) as session:
        _head, office = _firm(session, clock)
        sub = _sub(session, clock, office)
        with pytest.raises(DuplicateOffice, match="number 's1'"):
            _sub(session, clock, office, number="s1")
        with pytest.raises(DuplicateOffice, match="email"):
            create_sub_office(
                session,
                head_office=office,
                number="S2",
                name="S2",
                email=sub.email or "",
                firms=FIRMS,
                now=clock(),
                actor="test",
            )
        with pytest.raises(InvalidOfficeData, match="name must not be empty"):
            create_sub_office(
                session,
                head_office=office,
                number="S3",
                name="  ",
                email="s3@example.org",
                firms=FIRMS,
                now=clock(),
                actor="test",
            )
        with pytest.raises(InvalidOfficeData, match="under the head office"):
            _sub(session, clock, sub, number="S4")
        with pytest.raises(InvalidOfficeData, match="phone"):
            update_office(session, sub, phone="call me", firms=FIRMS, now=clock(), actor="t")
        with pytest.raises(InvalidOfficeData, match="broker number"):
            update_office(session, office, number="X", firms=FIRMS, now=clock(), actor="t")


def test_withdrawing_an_office_right_withdraws_it_from_its_users(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    with transaction(sessions) as session:
        head, office = _firm(session, clock)
        sub = _sub(session, clock, office)
        sub_user = create_user(
            session,
            broker_number="60/123/4567",
            email="sub.user@example.org",
            name="Sub User",
            office=sub,
            now=clock(),
            actor="test",
        )
        assert sub_user.rights == ["DIL", "DIP"]
        update_office(session, office, rights=["DIP", "ORV"], firms=FIRMS, now=clock(), actor="t")
        assert head.rights == ["DIP", "ORV"]
        assert sub.rights == ["DIP"] and sub_user.rights == ["DIP"]
        actions = session.scalars(select(AuditEvent.action)).all()
        assert actions.count("user.rights") == 2 and "office.update" in actions


def test_inactive_user_office_or_head_office_is_refused_with_whom_to_ask(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    with transaction(sessions) as session:
        head, office = _firm(session, clock)
        sub = _sub(session, clock, office)
        sub_head = create_user(
            session,
            broker_number="60/123/4567",
            email="sub.head@example.org",
            name="Sub Hoofd",
            office=sub,
            now=clock(),
            actor="test",
        )
        worker = create_user(
            session,
            broker_number="60/123/4567",
            email="worker@example.org",
            name="Worker",
            office=sub,
            now=clock(),
            actor="test",
        )
        assert sub_head.role is UserRole.HEAD and worker.role is UserRole.EMPLOYEE
        assert login_refusal(worker) is None

        assert set_user_active(session, worker, False, now=clock(), actor="t")
        refusal = login_refusal(worker)
        assert refusal is not None and refusal.reason == "user_disabled"
        assert (refusal.contact_name, refusal.contact_email) == (
            "Sub Hoofd",
            "sub.head@example.org",
        )
        set_user_active(session, worker, True, now=clock(), actor="t")
        assert worker.status is UserStatus.PENDING  # never logged in, no password
        worker.status = UserStatus.ACTIVE

        ended = set_office_active(session, sub, False, now=clock(), actor="t")
        assert set(ended) == {sub_head.id, worker.id}
        refusal = login_refusal(worker)
        assert refusal is not None and refusal.reason == "office_inactive"
        assert refusal.contact_email == head.email
        set_office_active(session, sub, True, now=clock(), actor="t")

        ended = set_office_active(session, office, False, now=clock(), actor="t")
        assert set(ended) == {head.id, sub_head.id, worker.id}
        refusal = login_refusal(worker)
        assert refusal is not None and refusal.reason == "head_office_inactive"
        assert refusal.contact_email is None
        assert login_refusal(head) is not None


def test_head_users_administer_their_offices_only(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    with transaction(sessions) as session:
        head, office = _firm(session, clock)
        sub_a = _sub(session, clock, office, "A")
        sub_b = _sub(session, clock, office, "B")
        users = {}
        for name, at, role in [
            ("a_head", sub_a, UserRole.HEAD),
            ("a_emp", sub_a, UserRole.EMPLOYEE),
            ("b_head", sub_b, UserRole.HEAD),
            ("emp", office, UserRole.EMPLOYEE),
        ]:
            users[name] = create_user(
                session,
                broker_number="60/123/4567",
                email=f"{name}@example.org",
                name=name,
                office=at,
                role=role,
                now=clock(),
                actor="test",
            )
        other_head, other_office = _firm(session, clock, "70/111/2222")

        assert [o.id for o in administered_offices(session, head)] == [
            office.id,
            sub_a.id,
            sub_b.id,
        ]
        assert {u.id for u in visible_users(session, head)} == {
            head.id,
            *(u.id for u in users.values()),
        }
        assert visible_users(session, head)[0].id in {head.id, users["emp"].id}
        a_head = users["a_head"]
        assert [o.id for o in administered_offices(session, a_head)] == [sub_a.id]
        assert authorise_user(session, a_head, users["a_emp"].id) is users["a_emp"]
        assert administered_offices(session, users["emp"]) == []
        for actor, user_id in [
            (a_head, users["b_head"].id),
            (a_head, head.id),
            (a_head, users["emp"].id),
            (head, other_head.id),
            (users["emp"], head.id),
            (head, 10_000),
        ]:
            with pytest.raises(NotPermitted):
                authorise_user(session, actor, user_id)
        for actor, office_id in [
            (a_head, sub_b.id),
            (a_head, office.id),
            (head, other_office.id),
            (head, 10_000),
        ]:
            with pytest.raises(NotPermitted):
                authorise_office(session, actor, office_id)
        set_user_active(session, head, False, now=clock(), actor="t")
        assert administered_offices(session, head) == []  # a deactivated head manages nothing
        with pytest.raises(InvalidUserData, match="your own account"):
            set_user_active(session, a_head, False, now=clock(), actor="t", by=a_head)


def test_delete_only_while_nobody_of_the_office_has_logged_in(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    with transaction(sessions) as session:
        _head, office = _firm(session, clock)
        sub = _sub(session, clock, office)
        user = create_user(
            session,
            broker_number="60/123/4567",
            email="new@example.org",
            name="New",
            office=sub,
            now=clock(),
            actor="test",
        )
        session.add(
            MailOutbox(
                kind="activation",
                to_addr=user.email,
                user_id=user.id,
                locale="de",
                template="activation",
                context={},
                created_at=clock(),
                next_attempt_at=clock(),
            )
        )
        session.flush()
        user.last_login_at = clock()
        with pytest.raises(OfficeInUse, match="deactivate it instead"):
            delete_office(session, sub, now=clock(), actor="t")
        user.last_login_at = None
        user_id, sub_id = user.id, sub.id
        delete_office(session, sub, now=clock() + timedelta(minutes=1), actor="t")
        assert session.get(User, user_id) is None and session.get(Office, sub_id) is None
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "office.delete")
        ).one()
        assert event.details["removed_users"] == [{"id": user_id, "email": "new@example.org"}]
        assert session.scalar(select(func.count()).select_from(MailOutbox)) == 1
        with pytest.raises(InvalidOfficeData, match="head office cannot be deleted"):
            delete_office(session, office, now=clock(), actor="t")


def test_set_user_rights_is_audited_and_bounded(
    sessions: sessionmaker[Session], clock: FakeClock
) -> None:
    with transaction(sessions) as session:
        head, office = _firm(session, clock)
        set_user_rights(session, head, ["ORV"], firms=FIRMS, now=clock(), actor="t")
        assert head.rights == ["ORV"] and effective_rights(head) == {"ORV"}
        sub = _sub(session, clock, office)
        assert head_office_of(session, office.organisation_id) is office
        user = create_user(
            session,
            broker_number="60/123/4567",
            email="s@example.org",
            name="S",
            office=sub,
            now=clock(),
            actor="t",
        )
        with pytest.raises(RightNotInOffice):
            set_user_rights(session, user, ["ORV"], firms=FIRMS, now=clock(), actor="t")
        assert user.rights == ["DIL", "DIP"]
