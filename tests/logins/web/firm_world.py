"""Two firms for the head users' pages (issue 13), made with the ca functions, and a strong
login for any of their users.

Firm A (60/100/0001): head office HA (DIP, DIL, ORV) with head user ``ha`` and employee
``ea``; sub-offices S1 (DIP, DIL; head user ``s1h``, employee ``s1e``) and S2 (DIP; head
user ``s2h``). Firm B (60/200/0002): head office HB with head user ``hb`` and employee
``eb``; sub-office SB (DIP; head user ``sbh``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyotp
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ca import (
    FirmSettings,
    create_sub_office,
    create_user,
    head_office_of,
)
from gateway.logins import begin_enrolment, confirm_enrolment
from gateway.logins._totp import TOTP_PURPOSE
from store import (
    ActivationToken,
    AuditEvent,
    EmailChangeToken,
    MailOutbox,
    Office,
    Sealer,
    User,
    UserRole,
    WebSession,
    transaction,
)
from tests.conftest import TEST_SECRET_KEY, FakeClock
from tests.logins.web.test_password_pages import login, set_password

FIRM_A = "60/100/0001"
FIRM_B = "60/200/0002"


@dataclass(frozen=True, kw_only=True)
class World:
    users: dict[str, int]  # short name -> user id
    offices: dict[str, int]  # HA, S1, S2, HB, SB -> office id

    def email(self, short: str) -> str:
        return f"{short}@example.org"


def build_world(sessions: sessionmaker[Session], clock: FakeClock) -> World:
    firms = FirmSettings()
    now, actor = clock(), "test:setup"
    users: dict[str, int] = {}
    offices: dict[str, int] = {}
    with transaction(sessions) as session:

        def user(short: str, broker: str, office: Office | None, role: UserRole) -> None:
            made = create_user(
                session,
                broker_number=broker,
                email=f"{short}@example.org",
                name=f"User {short.upper()}",
                now=now,
                actor=actor,
                role=role,
                office=office,
                firms=firms,
            )
            users[short] = made.id

        for broker, head, employee, subs in (
            (
                FIRM_A,
                "ha",
                "ea",
                (("S1", ("DIP", "DIL"), "s1h", "s1e"), ("S2", ("DIP",), "s2h", None)),
            ),
            (FIRM_B, "hb", "eb", (("SB", ("DIP",), "sbh", None),)),
        ):
            user(head, broker, None, UserRole.HEAD)
            user(employee, broker, None, UserRole.EMPLOYEE)
            main = head_office_of(session, session.get(User, users[head]).organisation_id)  # type: ignore[union-attr]
            offices["H" + head[1].upper()] = main.id
            for key, rights, sub_head, sub_employee in subs:
                office = create_sub_office(
                    session,
                    head_office=main,
                    number=f"{key}-1",
                    name=f"Office {key}",
                    email=f"{key.lower()}@offices.example.org",
                    rights=rights,
                    firms=firms,
                    now=now,
                    actor=actor,
                )
                offices[key] = office.id
                user(sub_head, broker, office, UserRole.HEAD)
                if sub_employee:
                    user(sub_employee, broker, office, UserRole.EMPLOYEE)
    for uid in users.values():
        set_password(sessions, uid)
    return World(users=users, offices=offices)


def enrol_totp(sessions: sessionmaker[Session], email: str, clock: FakeClock) -> str:
    """Set up the authenticator app straight in the store (the set-up pages are issue 14's
    and tested there); returns the TOTP secret. The enrolment's code is the previous
    window's, so the login's current code is not a replay."""
    sealer = Sealer(secret=TEST_SECRET_KEY, purpose=TOTP_PURPOSE)
    with transaction(sessions) as s:
        uid = s.scalar(select(User.id).where(User.email == email))
    assert uid is not None, email
    enrolment = begin_enrolment(
        sessions, user_id=uid, sealer=sealer, issuer="brokergate", now=clock()
    )
    earlier = clock() - timedelta(seconds=30)
    confirm_enrolment(
        sessions,
        user_id=uid,
        code=pyotp.TOTP(enrolment.secret).at(earlier),
        sealer=sealer,
        now=clock(),
    )
    return enrolment.secret


async def strong_login(
    b: Any, email: str, clock: FakeClock, sessions: sessionmaker[Session]
) -> str:
    """Password + authenticator app: the session is strong and fresh; returns the secret."""
    secret = enrol_totp(sessions, email, clock)
    status, _, response = await login(b, email)
    assert status == 303 and "/login/second-factor" in response.headers["Location"], b.last[:300]
    await b.get("/_gateway/login/second-factor?next=/antrag")
    status, _, response = await b.post(
        "/_gateway/login/second-factor",
        {"code": pyotp.TOTP(secret).at(clock()), "next": "/antrag"},
        follow=False,
    )
    assert status == 303 and response.headers["Location"] == "/antrag", b.last[:300]
    return secret


def snapshot(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """Everything the firm pages could change: users, offices, mails, links, sessions."""
    with transaction(sessions) as s:
        return {
            "users": [
                (u.id, u.email, u.name, u.status, u.role, tuple(u.rights), u.office_id)
                for u in s.scalars(select(User).order_by(User.id))
            ],
            "offices": [
                (o.id, o.number, o.name, o.email, o.address, o.city, tuple(o.rights), o.active)
                for o in s.scalars(select(Office).order_by(Office.id))
            ],
            "mails": len(s.scalars(select(MailOutbox.id)).all()),
            "activation_links": len(s.scalars(select(ActivationToken.id)).all()),
            "email_links": len(s.scalars(select(EmailChangeToken.id)).all()),
            "ended_sessions": len(
                s.scalars(select(WebSession.id).where(WebSession.ended_at.is_not(None))).all()
            ),
            "firm_audit": len(
                s.scalars(
                    select(AuditEvent.id).where(
                        AuditEvent.action.in_(
                            [
                                "user.add",
                                "user.rights",
                                "user.name",
                                "user.deactivate",
                                "user.reactivate",
                                "user.activation.sent",
                                "user.email.change_requested",
                                "office.add",
                                "office.update",
                                "office.deactivate",
                                "office.reactivate",
                                "office.delete",
                            ]
                        )
                    )
                ).all()
            ),
        }
