"""The signer's decision and issuance: "issue for user U because of session S" (issue 12).

The gateway parses untrusted input all day, so it holds no CA key. It asks the signer (the
only process that opens the CA keys) to issue; the signer trusts nothing the gateway says
except the request id, the user and the session id, and re-checks everything in the store
in ONE transaction: the user is active, the session is live, belongs to the user, has the
level a download needs and a fresh login, the broker's download limit and the signer's own
per-user and global rates. Then it writes the certificate row, the sealed password mail and
the audit rows, and stores its answer under the request id, so a retry (the gateway timed
out, the signer restarted) replays the answer instead of issuing a second certificate.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ca._authority import CertificateAuthority
from ca._keys import generate_key
from ca._signer_settings import SignerSettings
from store import (
    FRESH_BASIC_KEY,
    Certificate,
    CertificateStatus,
    Level,
    Sealer,
    SignerRequest,
    User,
    UserStatus,
    WebSession,
    record_audit,
    transaction,
)

log = logging.getLogger("brokergate.signer")

SIGNER_PURPOSE = "signer-answer"  # the sealer purpose of stored answers
MAX_REQUEST_ID = 64  # characters: the column's width (a UUID4 hex is 32)


@dataclass(frozen=True, kw_only=True)
class SessionRules:
    """The gateway's session rules the signer re-applies (from the config, at the edge).

    Attributes:
        idle_timeout: ``gateway.idle_timeout``: a session unseen this long is over.
        fresh_login: ``logins.fresh_login``: a download needs a factor presented this recently.
        downloads_per_window: ``logins.downloads_per_day``: the broker's own download limit.
        download_window: the window that limit counts in.
    """

    idle_timeout: timedelta
    fresh_login: timedelta
    downloads_per_window: int
    download_window: timedelta = timedelta(days=1)


@dataclass(frozen=True, kw_only=True)
class IssueRequest:
    """What the gateway may say. Nothing else it knows is believed."""

    request_id: str
    user_id: int
    session_id: str
    client_addr: str | None = None

    def __post_init__(self) -> None:
        if not (0 < len(self.request_id) <= MAX_REQUEST_ID) or not self.request_id.isprintable():
            raise ValueError(f"request_id must be 1..{MAX_REQUEST_ID} printable characters")
        if len(self.session_id) != 64:
            raise ValueError("session_id must be the session's 64-character id")

    @classmethod
    def from_json(cls, data: Any) -> IssueRequest:
        """Raises ValueError on anything but the expected object."""
        if not isinstance(data, dict) or set(data) - {
            "request_id",
            "user_id",
            "session_id",
            "client_addr",
        }:
            raise ValueError("expected an object with request_id, user_id, session_id")
        request_id, user_id, session_id = (
            data.get("request_id"),
            data.get("user_id"),
            data.get("session_id"),
        )
        client_addr = data.get("client_addr")
        if not isinstance(request_id, str) or not isinstance(session_id, str):
            raise ValueError("request_id and session_id must be strings")
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            raise ValueError("user_id must be an integer")
        if client_addr is not None and (not isinstance(client_addr, str) or len(client_addr) > 64):
            raise ValueError("client_addr must be a short string")
        return cls(
            request_id=request_id, user_id=user_id, session_id=session_id, client_addr=client_addr
        )


@dataclass(frozen=True, kw_only=True)
class SignerAnswer:
    """``issued`` (with the PKCS#12) or ``refused`` (with a reason, and ``until`` if waiting
    helps)."""

    outcome: str
    reason: str | None = None
    until: datetime | None = None
    pkcs12: bytes | None = None
    serial: str | None = None
    not_after: datetime | None = None
    certificate_id: int | None = None
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "until": self.until.isoformat() if self.until else None,
            "pkcs12": base64.b64encode(self.pkcs12).decode() if self.pkcs12 else None,
            "serial": self.serial,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "certificate_id": self.certificate_id,
            "replayed": self.replayed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SignerAnswer:
        def when(key: str) -> datetime | None:
            value = data.get(key)
            return datetime.fromisoformat(value) if value else None

        p12 = data.get("pkcs12")
        return cls(
            outcome=str(data["outcome"]),
            reason=data.get("reason"),
            until=when("until"),
            pkcs12=base64.b64decode(p12) if p12 else None,
            serial=data.get("serial"),
            not_after=when("not_after"),
            certificate_id=data.get("certificate_id"),
            replayed=bool(data.get("replayed")),
        )


# Refusal reasons (the gateway maps "rate_limited" to its "too soon" page, the rest to 403).
SESSION_INVALID = "session_invalid"
NOT_FRESH = "not_fresh"
USER_INACTIVE = "user_inactive"
RATE_LIMITED = "rate_limited"
SIGNER_RATE_USER = "signer_rate_user"
SIGNER_RATE_GLOBAL = "signer_rate_global"
REQUEST_ID_REUSED = "request_id_reused"


@dataclass(kw_only=True)
class Signer:
    """Answers issue requests. Owns nothing that needs closing except the authority's keys
    (``authority.close()``, by whoever built it)."""

    authority: CertificateAuthority
    sessions: sessionmaker[Session]
    settings: SignerSettings
    rules: SessionRules
    answer_sealer: Sealer
    # Called with the refusal reason of every rate refusal (the Prometheus counter).
    on_rate_refusal: Callable[[str], None] = lambda reason: None

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.authority.clock

    def issue(self, request: IssueRequest) -> SignerAnswer:
        """Answer ``request``: a replay of a stored answer, a refusal, or a new certificate.

        Every refusal and every issuance is stored and audited in the same transaction as
        its effects; an exception (store down, key unusable) leaves nothing behind.
        """
        # RSA key generation (tens of ms) before the transaction opens: SQLite's write lock
        # is not held while it runs.
        key = generate_key(self.authority.settings.leaf_key_type)
        try:
            with transaction(self.sessions) as session:
                return self._answer(session, request, key)
        except IntegrityError:
            # The same request id, inserted by a concurrent attempt that committed first:
            # ours rolled back whole (no certificate, no mail); replay theirs.
            with transaction(self.sessions) as session:
                stored = session.get(SignerRequest, request.request_id)
                if stored is None:
                    raise
                return self._replay(stored, request)

    def _answer(self, session: Session, request: IssueRequest, key: Any) -> SignerAnswer:
        now = self.clock()
        stored = session.get(SignerRequest, request.request_id)
        if stored is not None:
            return self._replay(stored, request)
        # SECURITY: lock the user's row while counting, so concurrent requests for one
        # broker queue up and each sees the certificates before it.
        user = session.get(User, request.user_id, with_for_update=True)
        refusal, until = self._refusal(session, request, user, now)
        if refusal is not None:
            answer = SignerAnswer(outcome="refused", reason=refusal, until=until)
            record_audit(
                session,
                actor="system:signer",
                action="signer.refused",
                outcome="refused",
                now=now,
                user_id=user.id if user else None,
                client_addr=request.client_addr,
                details={
                    "reason": refusal,
                    "request_id": request.request_id,
                    "until": until.isoformat() if until else None,
                },
            )
            if refusal in (SIGNER_RATE_USER, SIGNER_RATE_GLOBAL):
                self.on_rate_refusal(refusal)
            self._store(session, request, answer, now, certificate_id=None, user=user)
            return answer
        assert user is not None  # _refusal checked it
        actor = f"user:{user.id}"
        current = session.scalar(
            select(Certificate)
            .where(
                Certificate.user_id == user.id,
                Certificate.status == CertificateStatus.VALID,
                Certificate.not_after > now,
            )
            .order_by(Certificate.not_after.desc(), Certificate.id.desc())
            .limit(1)
        )
        issued = self.authority.issue_certificate(
            user.id,
            actor,
            session=session,
            replaces_id=current.id if current else None,
            _key=key,
        )
        record_audit(
            session,
            actor=actor,
            action="cert.download",
            now=now,
            user_id=user.id,
            serial=issued.serial,
            client_addr=request.client_addr,
            details={
                "replaces": current.serial if current else None,
                "via": "signer",
                "request_id": request.request_id,
            },
        )
        answer = SignerAnswer(
            outcome="issued",
            pkcs12=issued.pkcs12,
            serial=issued.serial,
            not_after=issued.not_after,
            certificate_id=issued.certificate_id,
        )
        self._store(session, request, answer, now, certificate_id=issued.certificate_id, user=user)
        return answer

    def _refusal(
        self, session: Session, request: IssueRequest, user: User | None, now: datetime
    ) -> tuple[str | None, datetime | None]:
        """Why ``request`` must be refused (and until when), or ``(None, None)``."""
        if user is None or user.status != UserStatus.ACTIVE:
            return USER_INACTIVE, None
        web = session.get(WebSession, request.session_id)
        if (
            web is None
            or web.user_id != user.id
            or web.ended_at is not None
            or web.absolute_expires_at <= now
            or web.last_seen_at + self.rules.idle_timeout <= now
        ):
            return SESSION_INVALID, None
        # A download needs a basic login or better (the account page's require_fresh).
        if not web.level.satisfies(Level.BASIC):
            return SESSION_INVALID, None
        if not self._fresh(session, web, user.id, now):
            return NOT_FRESH, None
        actor = f"user:{user.id}"
        window = self.rules.download_window
        own = sorted(
            session.scalars(
                select(Certificate.issued_at).where(
                    Certificate.user_id == user.id,
                    Certificate.issued_by == actor,
                    Certificate.issued_at > now - window,
                )
            ).all()
        )
        if len(own) >= self.rules.downloads_per_window:
            return RATE_LIMITED, own[-self.rules.downloads_per_window] + window
        # The signer's own limits, which no gateway setting can lift.
        since = now - self.settings.rate_window
        issued = SignerRequest.outcome == "issued"
        mine = session.scalar(
            select(func.count())
            .select_from(SignerRequest)
            .where(issued, SignerRequest.user_id == user.id, SignerRequest.created_at > since)
        )
        if (mine or 0) >= self.settings.user_rate:
            return SIGNER_RATE_USER, None
        everyone = session.scalar(
            select(func.count())
            .select_from(SignerRequest)
            .where(issued, SignerRequest.created_at > since)
        )
        if (everyone or 0) >= self.settings.global_rate:
            return SIGNER_RATE_GLOBAL, None
        return None, None

    def _fresh(self, session: Session, web: WebSession, user_id: int, now: datetime) -> bool:
        """The gateway's ``is_fresh`` for a basic action, from the stored session alone."""
        if web.cert_fingerprint is not None:
            # A certificate session: the certificate must still be the user's and valid.
            cert = session.scalar(
                select(Certificate).where(Certificate.fingerprint_sha256 == web.cert_fingerprint)
            )
            return (
                cert is not None
                and cert.user_id == user_id
                and cert.status == CertificateStatus.VALID
                and cert.not_after > now
            )
        window = self.rules.fresh_login
        if web.authenticated_at is not None and now - web.authenticated_at <= window:
            return True
        basic_at = (web.data or {}).get(FRESH_BASIC_KEY)
        if not isinstance(basic_at, str):
            return False
        try:
            return now - datetime.fromisoformat(basic_at) <= window
        except ValueError:
            return False

    def _store(
        self,
        session: Session,
        request: IssueRequest,
        answer: SignerAnswer,
        now: datetime,
        *,
        certificate_id: int | None,
        user: User | None,
    ) -> None:
        if user is None:
            return  # no such user: nothing to remember (the FK would refuse the row)
        sealed = self.answer_sealer.seal(json.dumps(answer.to_json()).encode())
        session.add(
            SignerRequest(
                id=request.request_id,
                user_id=user.id,
                session_id=request.session_id,
                outcome=answer.outcome,
                certificate_id=certificate_id,
                answer_sealed=sealed.decode(),
                created_at=now,
            )
        )
        session.flush()

    def _replay(self, stored: SignerRequest, request: IssueRequest) -> SignerAnswer:
        if stored.user_id != request.user_id or stored.session_id != request.session_id:
            # SECURITY: a request id is not a bearer token for someone else's certificate.
            return SignerAnswer(outcome="refused", reason=REQUEST_ID_REUSED)
        data = json.loads(self.answer_sealer.open(stored.answer_sealed.encode()))
        data["replayed"] = True
        return SignerAnswer.from_json(data)

    def housekeeping(self) -> None:
        """One round of what the signer does between requests: re-publish the CRLs that are
        due or that lack a revocation a keyless gateway made, and delete old requests."""
        published = self.authority.publish_due_crls()
        if published:
            log.info("signer: re-published the CRL of generation(s) %s", published)
        removed = self.forget_old_requests()
        if removed:
            log.info("signer: deleted %d answered request(s) past the retention", removed)

    def forget_old_requests(self) -> int:
        """Delete answered requests older than ``request_retention``; returns how many."""
        cutoff = self.clock() - self.settings.request_retention
        with transaction(self.sessions) as session:
            result = session.execute(delete(SignerRequest).where(SignerRequest.created_at < cutoff))
            return int(getattr(result, "rowcount", 0) or 0)
