"""Passkeys (WebAuthn level 2, the ``webauthn`` package): register on the account page, log in.

The relying party is derived from ``gateway.public_url``: its host is the RP ID and its
origin the only accepted origin. Credentials are discoverable (resident keys), so a broker
logs in without typing anything. A login whose authenticator verified the user (PIN,
fingerprint: the UV flag) is ``strong``; without UV a passkey is one factor, ``basic``.
The challenge is random, single-use and kept by the caller in the server-side session.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import parse_authentication_credential_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ca import LoginRefusal, login_refusal
from gateway._errors import LoginRefused
from gateway.logins._errors import EnrolmentError, PasskeyRejected
from gateway.logins._history import METHOD_PASSKEY, record_login
from store import Level, PasskeyCredential, User, record_audit, transaction

CHALLENGE_BYTES = 32
CEREMONY_TIMEOUT_MS = 120_000  # two minutes to touch the key or type the PIN
MAX_NAME_LENGTH = 128  # store.PasskeyCredential.name


@dataclass(frozen=True, kw_only=True)
class RelyingParty:
    rp_id: str
    origin: str
    name: str


def relying_party(public_url: str, name: str) -> RelyingParty:
    """The RP of ``public_url`` (scheme://host[:port]); its host is the RP ID."""
    parts = urlsplit(public_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"gateway.public_url {public_url!r} is not an absolute http(s) URL")
    default_port = 443 if parts.scheme == "https" else 80
    netloc = (
        parts.hostname if parts.port in (None, default_port) else f"{parts.hostname}:{parts.port}"
    )
    return RelyingParty(rp_id=parts.hostname, origin=f"{parts.scheme}://{netloc}", name=name)


@dataclass(frozen=True, kw_only=True)
class Ceremony:
    """Options for ``navigator.credentials.create/get`` and the challenge to keep."""

    options_json: str
    challenge: bytes


@dataclass(frozen=True, kw_only=True)
class PasskeyLogin:
    user_id: int
    credential_id: int
    user_verified: bool

    @property
    def level(self) -> Level:
        return Level.STRONG if self.user_verified else Level.BASIC


def registration_options(
    sessions: sessionmaker[Session], *, user_id: int, rp: RelyingParty
) -> Ceremony:
    """Options to register a new passkey for ``user_id`` (existing ones are excluded)."""
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    with transaction(sessions) as session:
        user = session.get(User, user_id, with_for_update=True)
        if user is None:
            raise EnrolmentError("unknown user")
        if user.webauthn_user_handle is None:
            # A random handle, not the user id: the authenticator stores it, and it must
            # not reveal anything (WebAuthn §14.6.1).
            user.webauthn_user_handle = secrets.token_bytes(32)
        existing = session.scalars(
            select(PasskeyCredential).where(PasskeyCredential.user_id == user_id)
        ).all()
        options = generate_registration_options(
            rp_id=rp.rp_id,
            rp_name=rp.name,
            user_id=user.webauthn_user_handle,
            user_name=user.email,
            user_display_name=user.name,
            challenge=challenge,
            timeout=CEREMONY_TIMEOUT_MS,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[
                PublicKeyCredentialDescriptor(id=c.credential_id) for c in existing
            ],
        )
    return Ceremony(options_json=options_to_json(options), challenge=challenge)


def finish_registration(
    sessions: sessionmaker[Session],
    *,
    user_id: int,
    credential_json: str,
    challenge: bytes,
    rp: RelyingParty,
    name: str,
    now: datetime,
) -> int:
    """Verify the authenticator's answer and store the passkey; returns its row id.

    Raises:
        PasskeyRejected: the answer does not verify (wrong challenge, origin, RP, no UV …).
    """
    label = " ".join(name.split())[:MAX_NAME_LENGTH] or "Passkey"
    try:
        verified = verify_registration_response(
            credential=credential_json,
            expected_challenge=challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=rp.origin,
            require_user_verification=True,
        )
    except WebAuthnException as exc:
        with transaction(sessions) as session:
            record_audit(
                session,
                actor=f"user:{user_id}",
                action="passkey.register",
                outcome="failed",
                now=now,
                user_id=user_id,
                details={"problem": str(exc)[:200]},
            )
        raise PasskeyRejected(str(exc)) from None
    try:
        transports = [str(t) for t in json.loads(credential_json)["response"].get("transports", [])]
        transports = [t for t in transports if t in {m.value for m in AuthenticatorTransport}]
    except (ValueError, KeyError, TypeError, AttributeError):
        transports = []
    with transaction(sessions) as session:
        if session.scalar(
            select(PasskeyCredential.id).where(
                PasskeyCredential.credential_id == verified.credential_id
            )
        ):
            raise PasskeyRejected("this passkey is already registered")
        row = PasskeyCredential(
            user_id=user_id,
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=transports,
            name=label,
            created_at=now,
        )
        session.add(row)
        session.flush()
        record_audit(
            session,
            actor=f"user:{user_id}",
            action="passkey.register",
            now=now,
            user_id=user_id,
            details={"passkey_id": row.id, "name": label},
        )
        return row.id


def authentication_options(rp: RelyingParty) -> Ceremony:
    """Options for a username-less passkey login (any discoverable credential)."""
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        challenge=challenge,
        timeout=CEREMONY_TIMEOUT_MS,
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return Ceremony(options_json=options_to_json(options), challenge=challenge)


def finish_authentication(
    sessions: sessionmaker[Session],
    *,
    credential_json: str,
    challenge: bytes,
    rp: RelyingParty,
    now: datetime,
    client_addr: str | None = None,
    expected_user_id: int | None = None,
) -> PasskeyLogin:
    """Verify a passkey login; updates the sign count and the login history.

    Args:
        expected_user_id: when the passkey is the second factor after a password (or a
            step-up), the passkey must belong to this user.

    Raises:
        PasskeyRejected: unknown credential, wrong user, bad signature, a sign count that
            went backwards (a cloned authenticator, WebAuthn §6.1.1).
        LoginRefused: the passkey is right but the user may not log in
            (``ca.login_refusal``: user or office deactivated, issue 13).
    """
    problem: str | None = None
    user_id: int | None = None
    refused: LoginRefusal | None = None
    with transaction(sessions) as session:
        try:
            parsed = parse_authentication_credential_json(credential_json)
        except WebAuthnException as exc:
            parsed = None
            problem = f"malformed answer: {exc}"
        row = None
        if parsed is not None:
            row = session.scalar(
                select(PasskeyCredential)
                .where(PasskeyCredential.credential_id == parsed.raw_id)
                .with_for_update()
            )
            if row is None:
                problem = "unknown passkey"
            elif expected_user_id is not None and row.user_id != expected_user_id:
                problem = "the passkey belongs to another account"
        if row is not None and problem is None:
            user_id = row.user_id
            try:
                verified = verify_authentication_response(
                    credential=credential_json,
                    expected_challenge=challenge,
                    expected_rp_id=rp.rp_id,
                    expected_origin=rp.origin,
                    credential_public_key=row.public_key,
                    credential_current_sign_count=row.sign_count,
                    require_user_verification=False,  # UV decides the level, see module doc
                )
            except WebAuthnException as exc:
                problem = str(exc)
            else:
                user = session.get(User, row.user_id)
                refusal = login_refusal(user) if user is not None else None
                if user is None:
                    problem = "the account is gone"
                elif refusal is not None:
                    problem, refused = f"login refused: {refusal.reason}", refusal
                else:
                    row.sign_count = verified.new_sign_count
                    row.last_used_at = now
                    if expected_user_id is None:
                        record_login(user, METHOD_PASSKEY, now)
                    record_audit(
                        session,
                        actor=f"user:{user.id}",
                        action="login.passkey",
                        now=now,
                        user_id=user.id,
                        client_addr=client_addr,
                        details={"passkey_id": row.id, "user_verified": verified.user_verified},
                    )
                    return PasskeyLogin(
                        user_id=user.id, credential_id=row.id, user_verified=verified.user_verified
                    )
        record_audit(
            session,
            actor=f"user:{user_id}" if user_id else "anonymous",
            action="login.passkey",
            outcome="failed",
            now=now,
            user_id=user_id,
            client_addr=client_addr,
            details={"problem": (problem or "")[:200]},
        )
    if refused is not None and user_id is not None:
        raise LoginRefused(refused, user_id=user_id)
    raise PasskeyRejected(problem or "verification failed")


def list_passkeys(session: Session, user_id: int) -> list[PasskeyCredential]:
    return list(
        session.scalars(
            select(PasskeyCredential)
            .where(PasskeyCredential.user_id == user_id)
            .order_by(PasskeyCredential.created_at)
        )
    )


def remove_passkey(
    session: Session, *, user_id: int, passkey_id: int, actor: str, now: datetime
) -> bool:
    """Delete one of ``user_id``'s passkeys (caller's transaction, audited)."""
    result = session.execute(
        delete(PasskeyCredential).where(
            PasskeyCredential.id == passkey_id, PasskeyCredential.user_id == user_id
        )
    )
    removed = bool(getattr(result, "rowcount", 0))
    record_audit(
        session,
        actor=actor,
        action="passkey.remove",
        outcome="ok" if removed else "noop",
        now=now,
        user_id=user_id,
        details={"passkey_id": passkey_id},
    )
    return removed
