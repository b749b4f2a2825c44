"""The CA service: generations (init, rotate, retire), issuance, revocation, CRL publication.

One :class:`CertificateAuthority` per process, built at the edge from the config.
It owns nothing that needs closing: the session factory belongs to the caller.
Every method is one transaction (or joins the caller's ``session``): either all of
it happens, audit event and outbox mail included, or none of it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from ca._builders import (
    LeafSubject,
    RevokedEntry,
    build_crl,
    build_cross_certificate,
    build_issuing,
    build_leaf,
    build_root,
    ca_name,
)
from ca._errors import (
    CAAlreadyInitialised,
    CANotInitialised,
    GenerationInUse,
    InvalidGenerationState,
    UnknownCertificate,
    UnknownGeneration,
    UnknownUser,
)
from ca._keys import PrivateKey, generate_key
from ca._keystore import CAKeys, NewKey, key_location
from ca._pkcs12 import friendly_name, generate_password, pack_pkcs12
from ca._settings import CASettings, P12Profile
from ca._validity import add_calendar_years
from store import (
    OUTBOX_PURPOSE,
    CAGeneration,
    CARoot,
    Certificate,
    CertificateStatus,
    Clock,
    GenerationStatus,
    RevocationReason,
    RootStatus,
    Sealer,
    User,
    UserStatus,
    queue_mail,
    record_audit,
    system_clock,
    transaction,
)

_REASON_FLAGS: dict[RevocationReason, x509.ReasonFlags | None] = {
    RevocationReason.UNSPECIFIED: None,
    RevocationReason.KEY_COMPROMISE: x509.ReasonFlags.key_compromise,
    RevocationReason.AFFILIATION_CHANGED: x509.ReasonFlags.affiliation_changed,
    RevocationReason.SUPERSEDED: x509.ReasonFlags.superseded,
    RevocationReason.CESSATION_OF_OPERATION: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.CERTIFICATE_HOLD: x509.ReasonFlags.certificate_hold,
    RevocationReason.PRIVILEGE_WITHDRAWN: x509.ReasonFlags.privilege_withdrawn,
}


SUPERSEDE_ACTOR = "system:supersede"


def normalise_serial(serial: str) -> str:
    """``"0A:1B…"``, ``"0x0a1b…"`` or ``"0a1b…"`` → ``"a1b…"`` (lower-case hex, no leading 0)."""
    cleaned = serial.strip().lower().removeprefix("0x").replace(":", "").replace(" ", "")
    try:
        return format(int(cleaned, 16), "x")
    except ValueError:
        raise UnknownCertificate(serial) from None


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True, kw_only=True)
class IssuedCertificate:
    """The result of an issuance. ``pkcs12`` is handed to the broker once and never stored."""

    pkcs12: bytes = field(repr=False)
    serial: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    friendly_name: str
    certificate_id: int
    generation: int
    user_id: int
    email: str


@dataclass(frozen=True, kw_only=True)
class GenerationInfo:
    generation: int
    status: GenerationStatus
    subject: str
    root_subject: str
    not_before: datetime
    not_after: datetime
    live_certificates: int
    crl_number: int
    crl_next_update: datetime | None
    # Where the issuing CA's and its root's private keys live (file row or token + key id).
    key_location: str = ""
    root_key_location: str = ""


@dataclass(kw_only=True)
class CertificateAuthority:
    """Runs the CA against the store. See the module docstring for transactions."""

    settings: CASettings
    sessions: sessionmaker[Session]
    clock: Clock = system_clock
    outbox_sealer: Sealer | None = None
    # Opened CA keys, by (table, id): opening a PBKDF2-protected key costs tens of ms, and
    # finding a token key a round trip, which would dominate bulk issuance. Lives as long
    # as this object.
    _keys: dict[tuple[str, int], PrivateKey] = field(default_factory=dict, repr=False)
    # The key backends for ``settings`` (rebuilt if the settings object is replaced). Owns
    # the PKCS#11 session when ca.key_store = pkcs11; ``close()`` ends it.
    _backends: tuple[CASettings, CAKeys] | None = field(default=None, repr=False)
    # SECURITY (issue 12): a keyless authority (the gateway's, next to a signer) never opens
    # a CA key: it cannot issue, and a revocation only marks the row (effective at once in
    # the gateway's revocation check); the signer re-publishes the CRL within a minute.
    keyless: bool = False

    # -- generations ---------------------------------------------------------------

    def init(self, actor: str) -> int:
        """Create the root and generation 1. Refuses if a CA exists. Returns 1."""
        now = self.clock()
        with self._new_keys() as made, transaction(self.sessions) as session:
            existing = session.scalar(select(func.count()).select_from(CAGeneration)) or 0
            if existing or session.scalar(select(func.count()).select_from(CARoot)):
                raise CAAlreadyInitialised(existing)
            root_new = self._generate(made, self.settings.root_common_name)
            root_key = root_new.key
            root_cert = build_root(
                key=root_key,
                subject=ca_name(self.settings.root_common_name, self.settings.organisation_name),
                now=now,
                validity=self.settings.root_validity,
            )
            root = CARoot(
                subject=root_cert.subject.rfc4514_string(),
                cert_pem=_pem(root_cert),
                key_pem_encrypted=root_new.pem_encrypted,
                key_uri=root_new.uri,
                cross_cert_pem=None,
                status=RootStatus.ACTIVE,
                not_before=root_cert.not_valid_before_utc,
                not_after=root_cert.not_valid_after_utc,
                created_at=now,
            )
            session.add(root)
            session.flush()
            self._keys[("root", root.id)] = root_key
            generation = self._new_generation(session, root, 1, now, made)
            record_audit(
                session,
                actor=actor,
                action="ca.init",
                now=now,
                details={"generation": generation.id, "root": root.subject},
            )
            return generation.id

    def rotate(self, actor: str) -> int:
        """A new issuing generation under the active root becomes active; the old one
        stays trusted (status ``rotated``) until retired. Returns the new generation."""
        now = self.clock()
        with self._new_keys() as made, transaction(self.sessions) as session:
            active = self._active_generation(session)
            root = session.get_one(CARoot, active.root_id)
            self._root_key(root)  # fail on a wrong passphrase or PIN before changing anything
            active.status = GenerationStatus.ROTATED
            active.rotated_at = now
            new = self._new_generation(session, root, self._next_generation_id(session), now, made)
            record_audit(
                session,
                actor=actor,
                action="ca.rotate",
                now=now,
                details={"from": active.id, "to": new.id},
            )
            return new.id

    def rotate_root(self, actor: str) -> int:
        """Root rotation: a new root, cross-signed by the current one, and a new issuing
        generation below it. Returns the new generation. See docs/ca-rotation.md."""
        now = self.clock()
        with self._new_keys() as made, transaction(self.sessions) as session:
            active = self._active_generation(session)
            old_root = session.get_one(CARoot, active.root_id)
            old_root_key = self._root_key(old_root)
            old_root_cert = x509.load_pem_x509_certificate(old_root.cert_pem.encode())
            generation_no = self._next_generation_id(session)
            root_cn = f"{self.settings.root_common_name} R{generation_no}"
            new_root = self._generate(made, root_cn)
            new_root_key = new_root.key
            new_root_cert = build_root(
                key=new_root_key,
                subject=ca_name(root_cn, self.settings.organisation_name),
                now=now,
                validity=self.settings.root_validity,
            )
            cross = build_cross_certificate(
                new_root=new_root_cert, old_root=old_root_cert, old_root_key=old_root_key, now=now
            )
            new_root_row = CARoot(
                subject=new_root_cert.subject.rfc4514_string(),
                cert_pem=_pem(new_root_cert),
                key_pem_encrypted=new_root.pem_encrypted,
                key_uri=new_root.uri,
                cross_cert_pem=_pem(cross),
                status=RootStatus.ACTIVE,
                not_before=new_root_cert.not_valid_before_utc,
                not_after=new_root_cert.not_valid_after_utc,
                created_at=now,
            )
            session.add(new_root_row)
            session.flush()
            self._keys[("root", new_root_row.id)] = new_root_key
            old_root.status = RootStatus.ROTATED
            active.status = GenerationStatus.ROTATED
            active.rotated_at = now
            new = self._new_generation(session, new_root_row, generation_no, now, made)
            record_audit(
                session,
                actor=actor,
                action="ca.rotate_root",
                now=now,
                details={"from": active.id, "to": new.id, "root": new_root_row.subject},
            )
            return new.id

    def retire(self, generation: int, actor: str, *, force: bool = False) -> int:
        """Stop trusting ``generation``. Returns how many live certificates it still had.

        Raises:
            GenerationInUse: live certificates remain and ``force`` is false.
            InvalidGenerationState: it is the active generation (rotate first).
        """
        now = self.clock()
        with transaction(self.sessions) as session:
            gen = session.get(CAGeneration, generation)
            if gen is None:
                raise UnknownGeneration(generation)
            if gen.status == GenerationStatus.RETIRED:
                raise InvalidGenerationState(f"generation {generation} is already retired")
            if gen.status == GenerationStatus.ACTIVE:
                raise InvalidGenerationState(
                    f"generation {generation} is the active one; run 'brokergate ca rotate' "
                    "first so that new certificates have an issuer"
                )
            live = self._live_count(session, generation, now)
            if live and not force:
                raise GenerationInUse(generation, live)
            gen.status = GenerationStatus.RETIRED
            gen.retired_at = now
            session.flush()
            retired_root = self._retire_root_if_unused(session, gen.root_id)
            record_audit(
                session,
                actor=actor,
                action="ca.retire",
                now=now,
                details={
                    "generation": generation,
                    "live_certificates": live,
                    "forced": force,
                    "root_retired": retired_root,
                },
            )
            return live

    def status(self) -> list[GenerationInfo]:
        """Every generation with its validity, live certificates and next CRL update."""
        now = self.clock()
        with transaction(self.sessions) as session:
            gens = session.scalars(select(CAGeneration).order_by(CAGeneration.id)).all()
            if not gens:
                raise CANotInitialised()
            rows = session.execute(
                select(Certificate.generation_id, func.count())
                .where(
                    Certificate.status == CertificateStatus.VALID,
                    Certificate.not_after > now,
                )
                .group_by(Certificate.generation_id)
            ).all()
            live: dict[int, int] = {row[0]: row[1] for row in rows}
            return [
                GenerationInfo(
                    generation=g.id,
                    status=g.status,
                    subject=g.subject,
                    root_subject=g.root.subject,
                    not_before=g.not_before,
                    not_after=g.not_after,
                    live_certificates=live.get(g.id, 0),
                    crl_number=g.crl_number,
                    crl_next_update=g.crl_next_update,
                    key_location=key_location(
                        pem_encrypted=g.key_pem_encrypted,
                        uri=g.key_uri,
                        row=f"ca_generations id {g.id}",
                    ),
                    root_key_location=key_location(
                        pem_encrypted=g.root.key_pem_encrypted,
                        uri=g.root.key_uri,
                        row=f"ca_roots id {g.root.id}",
                    ),
                )
                for g in gens
            ]

    # -- issuance ----------------------------------------------------------------

    def issue_certificate(
        self,
        user_id: int,
        actor: str,
        *,
        profile: P12Profile | None = None,
        session: Session | None = None,
        replaces_id: int | None = None,
        _key: PrivateKey | None = None,
    ) -> IssuedCertificate:
        """Issue a certificate for ``user_id`` and queue its password mail, atomically.

        A fresh key pair is made for this certificate only; the private key leaves this
        function inside the PKCS#12 and nowhere else. Pass ``session`` to join the
        caller's transaction (the gateway's download page); otherwise one is opened.

        Raises:
            UnknownUser: no such user, or the user is disabled.
            CANotInitialised, WrongPassphrase, InvalidGenerationState.
        """
        if session is None:
            # Key generation (tens of ms for RSA) happens before the transaction opens, so
            # that SQLite's write lock is not held while it runs.
            key = generate_key(self.settings.leaf_key_type)
            with transaction(self.sessions) as own:
                return self.issue_certificate(
                    user_id, actor, profile=profile, session=own, replaces_id=replaces_id, _key=key
                )
        if self.keyless:
            raise InvalidGenerationState("this process holds no CA key: the signer issues")
        if self.outbox_sealer is None:
            raise ValueError("issuance needs an outbox sealer for the password mail")
        now = self.clock()
        user = session.get(User, user_id)
        if user is None or user.status == UserStatus.DISABLED:
            raise UnknownUser(str(user_id) + (" (disabled)" if user else ""))
        generation = self._active_generation(session)
        issuer_key = self._generation_key(generation)
        issuer = x509.load_pem_x509_certificate(generation.cert_pem.encode())
        not_after = add_calendar_years(now, self.settings.leaf_validity_years)
        if not_after > issuer.not_valid_after_utc:
            raise InvalidGenerationState(
                f"the active issuing CA (generation {generation.id}) expires on "
                f"{issuer.not_valid_after_utc:%Y-%m-%d}, before a new certificate would; "
                "run 'brokergate ca rotate'"
            )
        key = _key or generate_key(self.settings.leaf_key_type)
        serial = x509.random_serial_number()
        crl_url = self.crl_url(generation.id)
        cert = build_leaf(
            public_key=key.public_key(),
            who=LeafSubject(
                user_id=user.id,
                name=user.name,
                email=user.email,
                broker_number=user.organisation.broker_number,
            ),
            organisation=self.settings.organisation_name,
            issuer=issuer,
            issuer_key=issuer_key,
            serial=serial,
            now=now,
            not_after=not_after,
            crl_url=crl_url,
        )
        chosen = profile or self.settings.p12_profile
        friendly = friendly_name(
            name=user.name,
            broker_number=user.organisation.broker_number,
            not_after=cert.not_valid_after_utc,
            serial=format(serial, "x"),
        )
        password = generate_password()
        p12 = pack_pkcs12(
            key=key,
            certificate=cert,
            chain=[issuer],
            friendly_name=friendly,
            password=password,
            profile=chosen,
        )
        serial_hex = format(serial, "x")
        fingerprint = fingerprint_sha256(cert)
        row = Certificate(
            serial=serial_hex,
            fingerprint_sha256=fingerprint,
            subject=cert.subject.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            status=CertificateStatus.VALID,
            generation_id=generation.id,
            user_id=user.id,
            key_type=self.settings.leaf_key_type,
            p12_profile=chosen,
            issued_at=now,
            issued_by=actor,
            replaces_id=replaces_id,
            cert_pem=_pem(cert),
        )
        session.add(row)
        session.flush()
        queue_mail(
            session,
            kind="certificate_password",
            to_addr=user.email,
            locale=user.locale,
            template="certificate_password",
            context={
                "name": user.name,
                "serial": serial_hex,
                # The moment, not its UTC date: the mail shows the date in the brokers'
                # zone, as the pages do (23:30 UTC on 24 Nov is 25 Nov in Berlin; issue 16).
                "not_after": cert.not_valid_after_utc.isoformat(),
                "friendly_name": friendly,
                "broker_number": user.organisation.broker_number,
            },
            secrets={"password": password},
            sealer=self.outbox_sealer,
            now=now,
            user_id=user.id,
        )
        record_audit(
            session,
            actor=actor,
            action="cert.issue",
            now=now,
            user_id=user.id,
            serial=serial_hex,
            details={
                "generation": generation.id,
                "profile": chosen,
                "key_type": self.settings.leaf_key_type,
                "not_after": cert.not_valid_after_utc.isoformat(),
            },
        )
        return IssuedCertificate(
            pkcs12=p12,
            serial=serial_hex,
            fingerprint_sha256=fingerprint,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            friendly_name=friendly,
            certificate_id=row.id,
            generation=generation.id,
            user_id=user.id,
            email=user.email,
        )

    @property
    def superseded_grace(self) -> timedelta:
        """How long an unused renewal leaves the old certificate valid."""
        return self.settings.superseded_grace

    def crl_url(self, generation: int) -> str | None:
        """Where relying parties fetch ``generation``'s CRL (None without a public base URL)."""
        if not self.settings.public_base_url:
            return None
        # Served by the gateway (anonymous route under its reserved prefix).
        return f"{self.settings.public_base_url.rstrip('/')}/_gateway/crl/{generation}.crl"

    # -- revocation and CRLs -----------------------------------------------------

    def revoke(
        self,
        serial: str,
        reason: RevocationReason,
        actor: str,
        *,
        session: Session | None = None,
    ) -> bool:
        """Revoke a certificate and re-publish its generation's CRL.

        Idempotent: revoking a revoked certificate changes nothing and returns False.

        Raises:
            UnknownCertificate: no certificate with that serial.
        """
        if session is None:
            with transaction(self.sessions) as own:
                return self.revoke(serial, reason, actor, session=own)
        now = self.clock()
        wanted = normalise_serial(serial)
        cert = session.scalar(select(Certificate).where(Certificate.serial == wanted))
        if cert is None:
            raise UnknownCertificate(serial)
        if cert.status == CertificateStatus.REVOKED:
            record_audit(
                session,
                actor=actor,
                action="cert.revoke",
                outcome="noop",
                now=now,
                user_id=cert.user_id,
                serial=cert.serial,
                details={"already_revoked_at": _iso(cert.revoked_at)},
            )
            return False
        generation = session.get_one(CAGeneration, cert.generation_id)
        key = None
        if generation.status != GenerationStatus.RETIRED and not self.keyless:
            key = self._generation_key(generation)  # wrong passphrase: fail before writing
        cert.status = CertificateStatus.REVOKED
        cert.revoked_at = now
        cert.revocation_reason = reason
        session.flush()
        if key is not None:
            self._publish_crl(session, generation, now)
        record_audit(
            session,
            actor=actor,
            action="cert.revoke",
            now=now,
            user_id=cert.user_id,
            serial=cert.serial,
            details={"reason": reason.value, "generation": generation.id},
        )
        return True

    def supersede_replaced(
        self, *, session: Session | None = None, user_id: int | None = None
    ) -> list[str]:
        """Revoke (``superseded``) every valid certificate whose renewal has been used to log
        in, or was issued more than ``settings.superseded_grace`` ago. Returns the serials.

        Renewal issues the new certificate with ``replaces_id`` pointing at the old one. The
        old one keeps working until the broker has imported and used the new one, so a
        broker who downloads but has not imported yet is not locked out; after the grace
        period it goes anyway, so a forgotten old certificate does not stay valid for two
        more years. The gateway calls this for one user at a certificate login and on the
        account page; the renewal process daily for everyone (``user_id=None``).
        """
        if session is None:
            with transaction(self.sessions) as own:
                return self.supersede_replaced(session=own, user_id=user_id)
        now = self.clock()
        newer = aliased(Certificate)
        stmt = (
            select(Certificate.serial)
            .join(newer, newer.replaces_id == Certificate.id)
            .where(
                Certificate.status == CertificateStatus.VALID,
                newer.status == CertificateStatus.VALID,
                (newer.first_used_at.is_not(None))
                | (newer.issued_at <= now - self.settings.superseded_grace),
            )
            .distinct()
        )
        if user_id is not None:
            stmt = stmt.where(Certificate.user_id == user_id)
        serials = list(session.scalars(stmt))
        for serial in serials:
            self.revoke(serial, RevocationReason.SUPERSEDED, SUPERSEDE_ACTOR, session=session)
        return serials

    def publish_due_crls(self, *, force: bool = False) -> list[int]:
        """Regenerate each non-retired generation's CRL whose nextUpdate is near, or that
        lacks a revocation made since its thisUpdate (a keyless gateway's, issue 12).

        A lapsed CRL makes every relying party that checks it reject everyone, so the
        renewal process calls this daily, and the signer every minute. Returns the
        generations re-published.
        """
        now = self.clock()
        done: list[int] = []
        with transaction(self.sessions) as session:
            gens = session.scalars(
                select(CAGeneration).where(CAGeneration.status != GenerationStatus.RETIRED)
            ).all()
            for gen in gens:
                due = (
                    gen.crl_next_update is None
                    or gen.crl_next_update - self.settings.crl_republish_before <= now
                    or self._revoked_since_crl(session, gen)
                )
                if force or due:
                    self._publish_crl(session, gen, now)
                    done.append(gen.id)
            if done:
                record_audit(
                    session,
                    actor="system:crl",
                    action="ca.crl_publish",
                    now=now,
                    details={"generations": done, "forced": force},
                )
        return done

    def crls(self) -> dict[int, bytes]:
        """The current CRL (PEM) of each non-retired generation."""
        with transaction(self.sessions) as session:
            gens = session.scalars(
                select(CAGeneration).where(CAGeneration.status != GenerationStatus.RETIRED)
            ).all()
            return {g.id: g.crl_pem.encode() for g in gens if g.crl_pem}

    # -- internals ----------------------------------------------------------------

    def _new_generation(
        self, session: Session, root: CARoot, number: int, now: datetime, made: list[NewKey]
    ) -> CAGeneration:
        root_key = self._root_key(root)
        root_cert = x509.load_pem_x509_certificate(root.cert_pem.encode())
        common_name = f"{self.settings.issuing_common_name} G{number}"
        new_key = self._generate(made, common_name)
        key = new_key.key
        cert = build_issuing(
            key=key,
            subject=ca_name(common_name, self.settings.organisation_name),
            root=root_cert,
            root_key=root_key,
            now=now,
            validity=self.settings.issuing_validity,
        )
        gen = CAGeneration(
            id=number,
            root_id=root.id,
            subject=cert.subject.rfc4514_string(),
            cert_pem=_pem(cert),
            key_pem_encrypted=new_key.pem_encrypted,
            key_uri=new_key.uri,
            key_type=self.settings.ca_key_type,
            status=GenerationStatus.ACTIVE,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            created_at=now,
            crl_number=0,
        )
        session.add(gen)
        session.flush()
        self._keys[("generation", gen.id)] = key
        self._publish_crl(session, gen, now)
        return gen

    def _publish_crl(self, session: Session, gen: CAGeneration, now: datetime) -> None:
        revoked = session.scalars(
            select(Certificate).where(
                Certificate.generation_id == gen.id,
                Certificate.status == CertificateStatus.REVOKED,
                # RFC 5280 §3.3: an entry may leave the CRL once the certificate has expired.
                Certificate.not_after > now,
            )
        ).all()
        issuer = x509.load_pem_x509_certificate(gen.cert_pem.encode())
        gen.crl_number += 1
        crl = build_crl(
            issuer=issuer,
            issuer_key=self._generation_key(gen),
            number=gen.crl_number,
            now=now,
            validity=self.settings.crl_validity,
            revoked=[
                RevokedEntry(
                    serial=int(c.serial, 16),
                    revoked_at=c.revoked_at or now,
                    reason=_REASON_FLAGS[c.revocation_reason or RevocationReason.UNSPECIFIED],
                )
                for c in revoked
            ],
        )
        gen.crl_pem = crl.public_bytes(serialization.Encoding.PEM).decode()
        gen.crl_this_update = now
        gen.crl_next_update = now + self.settings.crl_validity

    def _revoked_since_crl(self, session: Session, gen: CAGeneration) -> bool:
        """A certificate of ``gen`` was revoked (around or after the CRL's thisUpdate, which
        has whole seconds) and is not on the CRL."""
        if not gen.crl_pem:
            return True
        crl = x509.load_pem_x509_crl(gen.crl_pem.encode())
        serials = session.scalars(
            select(Certificate.serial).where(
                Certificate.generation_id == gen.id,
                Certificate.status == CertificateStatus.REVOKED,
                Certificate.revoked_at >= crl.last_update_utc - timedelta(seconds=1),
            )
        )
        return any(
            crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is None
            for serial in serials
        )

    def _active_generation(self, session: Session) -> CAGeneration:
        gen = session.scalar(
            select(CAGeneration).where(CAGeneration.status == GenerationStatus.ACTIVE)
        )
        if gen is None:
            raise CANotInitialised()
        return gen

    def _next_generation_id(self, session: Session) -> int:
        return (session.scalar(select(func.max(CAGeneration.id))) or 0) + 1

    def _live_count(self, session: Session, generation: int, now: datetime) -> int:
        return (
            session.scalar(
                select(func.count())
                .select_from(Certificate)
                .where(
                    Certificate.generation_id == generation,
                    Certificate.status == CertificateStatus.VALID,
                    Certificate.not_after > now,
                )
            )
            or 0
        )

    def _retire_root_if_unused(self, session: Session, root_id: int) -> bool:
        root = session.get_one(CARoot, root_id)
        if root.status != RootStatus.ROTATED:
            return False
        remaining = session.scalar(
            select(func.count())
            .select_from(CAGeneration)
            .where(
                CAGeneration.root_id == root_id,
                CAGeneration.status != GenerationStatus.RETIRED,
            )
        )
        if remaining:
            return False
        root.status = RootStatus.RETIRED
        return True

    def _root_key(self, root: CARoot) -> PrivateKey:
        return self._cached_key(("root", root.id), root.key_pem_encrypted, root.key_uri)

    def _generation_key(self, gen: CAGeneration) -> PrivateKey:
        return self._cached_key(("generation", gen.id), gen.key_pem_encrypted, gen.key_uri)

    def _cached_key(self, ref: tuple[str, int], pem: str | None, uri: str | None) -> PrivateKey:
        backends = self._key_backends()  # first: new settings drop the keys opened before
        key = self._keys.get(ref)
        if key is None:
            key = backends.open(pem_encrypted=pem, uri=uri)
            self._keys[ref] = key
        return key

    def _key_backends(self) -> CAKeys:
        if self._backends is None or self._backends[0] is not self.settings:
            if self._backends is not None:
                self._backends[1].close()
                self._keys.clear()  # opened through the backends just closed
            self._backends = (self.settings, CAKeys(self.settings))
        return self._backends[1]

    def _generate(self, made: list[NewKey], label: str) -> NewKey:
        new = self._key_backends().generate(self.settings.ca_key_type, label)
        made.append(new)
        return new

    @contextmanager
    def _new_keys(self) -> Iterator[list[NewKey]]:
        """Collects the CA keys a step makes; if the step fails (its transaction included),
        destroys those made in a token, so that nothing half-made is left behind."""
        made: list[NewKey] = []
        try:
            yield made
        except BaseException:
            self._keys.clear()  # may hold keys of rows that were rolled back
            for new in made:
                self._key_backends().discard(new)
            raise

    def open_active_key(self) -> int:
        """Open the active issuing CA's key now (the signer does at start, so a wrong
        passphrase or PIN stops it at once instead of failing the first download).

        Returns:
            The active generation.

        Raises:
            CANotInitialised, WrongPassphrase, KeyStoreError.
        """
        with transaction(self.sessions) as session:
            generation = self._active_generation(session)
            self._generation_key(generation)
            return generation.id

    def key_store(self) -> str:
        """Where new CA keys are made: ``file`` or ``pkcs11`` (``ca.key_store``)."""
        return self.settings.key_store

    def close(self) -> None:
        """End the PKCS#11 session, if one is open (optional: process exit does it too)."""
        self._keys.clear()
        if self._backends is not None:
            self._backends[1].close()
            self._backends = None


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def make_authority(
    *,
    settings: CASettings,
    sessions: sessionmaker[Session],
    secret_key: bytes,
    clock: Clock = system_clock,
) -> CertificateAuthority:
    """The usual wiring: the outbox sealer comes from the application secret."""
    return CertificateAuthority(
        settings=settings,
        sessions=sessions,
        clock=clock,
        outbox_sealer=Sealer(secret=secret_key, purpose=OUTBOX_PURPOSE) if secret_key else None,
    )
