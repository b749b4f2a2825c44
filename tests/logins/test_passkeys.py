"""Passkeys with a software authenticator: registration, login, UV → level, sign counts."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway import LoginRefused
from gateway.logins import (
    PasskeyRejected,
    authentication_options,
    finish_authentication,
    finish_registration,
    list_passkeys,
    registration_options,
    relying_party,
    remove_passkey,
)
from store import Level, PasskeyCredential, User, UserStatus, transaction
from tests.conftest import FakeClock
from tests.logins.conftest import MakeAccount, audit_events
from tests.logins.softauthn import SoftAuthenticator

RP = relying_party("https://portal.example.org", "brokergate")


def register(
    sessions: sessionmaker[Session], clock: FakeClock, uid: int, uv: bool = True
) -> SoftAuthenticator:
    authn = SoftAuthenticator(origin=RP.origin, rp_id=RP.rp_id, user_verification=uv)
    ceremony = registration_options(sessions, user_id=uid, rp=RP)
    finish_registration(
        sessions,
        user_id=uid,
        credential_json=authn.create(ceremony.options_json),
        challenge=ceremony.challenge,
        rp=RP,
        name="Laptop",
        now=clock(),
    )
    return authn


def login(sessions: sessionmaker[Session], clock: FakeClock, authn: SoftAuthenticator, **kw):  # type: ignore[no-untyped-def]
    ceremony = authentication_options(RP)
    answer = authn.get(
        ceremony.options_json, **{k: v for k, v in kw.items() if k in ("origin", "count_up")}
    )
    return finish_authentication(
        sessions,
        credential_json=answer,
        challenge=kw.get("challenge", ceremony.challenge),
        rp=RP,
        now=clock(),
        expected_user_id=kw.get("expected_user_id"),
    )


def test_relying_party_from_public_url() -> None:
    assert relying_party("https://localhost:8443/x", "b").origin == "https://localhost:8443"
    assert relying_party("https://localhost:8443", "b").rp_id == "localhost"
    assert (
        relying_party("https://portal.example.org:443", "b").origin == "https://portal.example.org"
    )
    with pytest.raises(ValueError):
        relying_party("portal.example.org", "b")


def test_register_and_log_in_with_user_verification_is_strong(
    sessions: sessionmaker[Session], clock: FakeClock, make_account: MakeAccount
) -> None:
    uid = make_account()
    ceremony = registration_options(sessions, user_id=uid, rp=RP)
    options = json.loads(ceremony.options_json)
    assert options["rp"] == {"id": "portal.example.org", "name": "brokergate"}
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    authn = register(sessions, clock, uid)
    with transaction(sessions) as s:
        (row,) = list_passkeys(s, uid)
        assert row.name == "Laptop" and row.transports == ["internal"]
        user = s.get(User, uid)
        assert user is not None and user.webauthn_user_handle == authn.user_handle
        assert str(uid).encode() != authn.user_handle  # the handle is random
    result = login(sessions, clock, authn)
    assert result.user_id == uid and result.user_verified and result.level == Level.STRONG
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None and user.last_login_method == "passkey"
        assert s.get(PasskeyCredential, result.credential_id).sign_count == 1  # type: ignore[union-attr]
    # Registering again excludes the existing credential.
    again = json.loads(registration_options(sessions, user_id=uid, rp=RP).options_json)
    assert len(again["excludeCredentials"]) == 1


def test_registration_without_user_verification_is_refused(
    sessions: sessionmaker[Session], clock: FakeClock, make_account: MakeAccount
) -> None:
    uid = make_account()
    with pytest.raises(PasskeyRejected):
        register(sessions, clock, uid, uv=False)
    assert [e.outcome for e in audit_events(sessions, "passkey.register")] == ["failed"]


def test_login_without_user_verification_is_only_basic(
    sessions: sessionmaker[Session], clock: FakeClock, make_account: MakeAccount
) -> None:
    uid = make_account()
    authn = register(sessions, clock, uid)
    authn.user_verification = False
    result = login(sessions, clock, authn)
    assert not result.user_verified and result.level == Level.BASIC


def test_wrong_origin_challenge_or_replayed_count_is_rejected(
    sessions: sessionmaker[Session], clock: FakeClock, make_account: MakeAccount
) -> None:
    uid = make_account()
    authn = register(sessions, clock, uid)
    with pytest.raises(PasskeyRejected):
        login(sessions, clock, authn, origin="https://evil.example.org")
    with pytest.raises(PasskeyRejected):
        login(sessions, clock, authn, challenge=b"x" * 32)
    login(sessions, clock, authn)
    with pytest.raises(PasskeyRejected):  # sign count did not go up: a cloned authenticator
        login(sessions, clock, authn, count_up=False)
    outcomes = [e.outcome for e in audit_events(sessions, "login.passkey")]
    assert outcomes == ["failed", "failed", "ok", "failed"]


def test_unknown_or_foreign_passkey_and_disabled_account(
    sessions: sessionmaker[Session], clock: FakeClock, make_account: MakeAccount
) -> None:
    uid = make_account()
    other = make_account()
    authn = register(sessions, clock, uid)
    stranger = SoftAuthenticator(origin=RP.origin, rp_id=RP.rp_id)
    with pytest.raises(PasskeyRejected, match="unknown passkey"):
        login(sessions, clock, stranger)
    with pytest.raises(PasskeyRejected, match="another account"):
        login(sessions, clock, authn, expected_user_id=other)
    with transaction(sessions) as s:
        user = s.get(User, uid)
        assert user is not None
        user.status = UserStatus.DISABLED
    with pytest.raises(LoginRefused, match="user_disabled"):  # issue 13: a page of its own
        login(sessions, clock, authn)
    with pytest.raises(PasskeyRejected, match="malformed"):
        finish_authentication(sessions, credential_json="{}", challenge=b"x", rp=RP, now=clock())


def test_removed_passkey_no_longer_logs_in(
    sessions: sessionmaker[Session], clock: FakeClock, make_account: MakeAccount
) -> None:
    uid = make_account()
    other = make_account()
    authn = register(sessions, clock, uid)
    with transaction(sessions) as s:
        (row,) = list_passkeys(s, uid)
        # Another user cannot remove it.
        assert not remove_passkey(
            s, user_id=other, passkey_id=row.id, actor=f"user:{other}", now=clock()
        )
        assert remove_passkey(s, user_id=uid, passkey_id=row.id, actor=f"user:{uid}", now=clock())
    with pytest.raises(PasskeyRejected):
        login(sessions, clock, authn)
