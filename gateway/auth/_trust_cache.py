"""The per-replica cache of certificate rows, users and trust material, with bounded staleness.

Why: identity must be checked on every request (revocation takes effect on the next
request, TLS resumption must not skip it), yet a known certificate must not cost a
database query per request. So:

* :meth:`TrustCache.get` answers from memory (event-loop safe, no I/O); on a miss the
  caller runs :meth:`TrustCache.load` in a thread (one query) and the row is cached,
  also "unknown fingerprint" answers (a foreign certificate must not cost a query each time).
* :meth:`TrustCache.refresh` runs every ``revocation_refresh_interval`` (≤ 2 s) in the
  app's refresh task: ``certificates.revoked_at > watermark - overlap`` (indexed), the
  cached users' status/e-mail, office, role, rights and login refusal (issue 13: a
  deactivated user or office is refused on every replica within the same bound), and the
  generations; a changed set of generations reloads
  the trust material and calls ``on_trust_change`` (new verifier, new CA names in TLS).
  The overlap re-reads a window of recent revocations, so a revocation committed late or
  stamped by a replica whose clock lags is still seen; every ``FULL_REFRESH_EVERY``-th
  refresh re-reads all cached rows as a backstop.
* If no refresh has succeeded for ``max_staleness`` the cache is *stale*: :meth:`get`
  reports a miss for everything, so every request reads the store (and fails closed with
  a 503 page if the store is down). Revocation therefore holds on every replica within
  max(refresh interval + query time, max_staleness) < 5 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from cryptography import x509
from sqlalchemy import false, func, select
from sqlalchemy.orm import Session, aliased, joinedload, sessionmaker

from ca import LoginRefusal, login_refusal, may_log_in, rights_within
from gateway.auth._certificate_identity import CertificateRecord, FirmFacts, UserRecord
from store import (
    CAGeneration,
    Certificate,
    GenerationStatus,
    Office,
    Organisation,
    RevocationReason,
    User,
    UserRole,
    UserStatus,
)

__all__ = ["FULL_REFRESH_EVERY", "MISS", "CacheEntry", "TrustCache", "TrustMaterialLike"]

FULL_REFRESH_EVERY = 30  # every 30th refresh (~1 min) re-reads every cached row
REVOCATION_OVERLAP = timedelta(minutes=10)  # clock skew + commit delay we tolerate
_CACHE_LIMIT = 100_000


class TrustMaterialLike(Protocol):
    """What ``ca.load_trust_material`` returns (public material only)."""

    @property
    def roots(self) -> list[x509.Certificate]: ...
    @property
    def intermediates(self) -> list[x509.Certificate]: ...
    @property
    def issuing_by_generation(self) -> dict[int, x509.Certificate]: ...


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """A fingerprint's cached answer: its row and user, or (record None) "not ours"."""

    record: CertificateRecord | None
    user: UserRecord | None


class _Miss:
    def __repr__(self) -> str:
        return "MISS"


MISS = _Miss()


@dataclass(kw_only=True)
class _Snapshot:
    retired: dict[int, datetime] = field(default_factory=dict)
    generation_key: tuple[tuple[int, str], ...] = ()


def _record(row: Certificate) -> CertificateRecord:
    return CertificateRecord(
        fingerprint=row.fingerprint_sha256,
        serial=row.serial,
        user_id=row.user_id,
        generation_id=row.generation_id,
        status=row.status,
        revoked_at=row.revoked_at,
        superseded=row.revocation_reason is RevocationReason.SUPERSEDED,
        not_before=row.not_before,
        not_after=row.not_after,
    )


class _UserRow(NamedTuple):
    """The columns of one user the cache keeps, with the office's and head office's (read
    as plain columns: building ORM objects for every cached user on every refresh cost
    two thirds of a refresh)."""

    id: int
    email: str
    name: str
    locale: str
    status: UserStatus
    role: UserRole
    rights: list[str] | None
    office_id: int
    office_number: str
    office_rights: list[str] | None
    office_active: bool
    head_office_id: int | None
    head_office_number: str | None
    head_office_rights: list[str] | None
    head_office_active: bool | None
    broker_number: str


_HEAD_OFFICE = aliased(Office)
_USER_COLUMNS = (
    User.id,
    User.email,
    User.name,
    User.locale,
    User.status,
    User.role,
    User.rights,
    User.office_id,
    Office.number,
    Office.rights,
    Office.active,
    Office.head_office_id,
    _HEAD_OFFICE.number,
    _HEAD_OFFICE.rights,
    _HEAD_OFFICE.active,
    Organisation.broker_number,
)


def _user(
    row: _UserRow, heads: dict[int, tuple[int, str]], refusals: dict[int, LoginRefusal]
) -> UserRecord:
    sub_office = row.head_office_id is not None
    return UserRecord(
        id=row.id,
        email=row.email,
        name=row.name,
        locale=row.locale,
        status=row.status,
        broker_number=row.broker_number,
        firm=FirmFacts(
            office_number=row.office_number,
            head_office_number=(row.head_office_number or "") if sub_office else row.office_number,
            role=row.role.value,
            rights=tuple(
                sorted(
                    rights_within(
                        row.rights,
                        row.office_rights,
                        (row.head_office_rights or ()) if sub_office else None,
                    )
                )
            ),
            rights_contact=_rights_contact(row, heads),
        ),
        # Issue 13: read with the user, so every refresh re-reads it. The common case (an
        # active user in active offices) needs nothing more than these columns; the rest
        # asks ``ca.login_refusal`` whom to name.
        refusal=refusals.get(row.id),
    )


def _rights_contact(row: _UserRow, heads: dict[int, tuple[int, str]]) -> str | None:
    """Who can give ``row`` a right: the office's head user for an employee, the head
    office's for a sub-office's head user (or an employee of a sub-office without one);
    None (the broker support) for the head office's head user."""
    candidates = [row.office_id] if row.role is not UserRole.HEAD else []
    if row.head_office_id is not None:
        candidates.append(row.head_office_id)
    for office_id in candidates:
        head = heads.get(office_id)
        if head is not None and head[0] != row.id:
            return head[1]
    return None


def _refusals(db: Session, rows: Sequence[_UserRow]) -> dict[int, LoginRefusal]:
    """``ca.login_refusal`` for the rows that may not log in (one query for the batch)."""
    ids = [
        r.id
        for r in rows
        if not may_log_in(
            r.status, r.office_active, None if r.head_office_id is None else r.head_office_active
        )
    ]
    if not ids:
        return {}
    found: dict[int, LoginRefusal] = {}
    users = db.scalars(
        select(User)
        .options(joinedload(User.office).joinedload(Office.head_office))
        .where(User.id.in_(ids))
    )
    for user in users:
        refusal = login_refusal(user, db)
        if refusal is not None:
            found[user.id] = refusal
    return found


def _head_users(db: Session, office_ids: set[int]) -> dict[int, tuple[int, str]]:
    """The first active head user (id, name) of each office: one query for a batch."""
    if not office_ids:
        return {}
    rows = db.execute(
        select(User.office_id, User.id, User.name)
        .where(
            User.office_id.in_(office_ids),
            User.role == UserRole.HEAD,
            User.status == UserStatus.ACTIVE,
        )
        .order_by(User.id)
    )
    heads: dict[int, tuple[int, str]] = {}
    for office_id, user_id, name in rows:
        heads.setdefault(office_id, (user_id, name))
    return heads


class TrustCache:
    """Certificates by fingerprint, users by id, retired generations, trust material.

    Args:
        factory: the store's session factory.
        trust_loader: ``ca.load_trust_material``.
        max_staleness: after this long without a successful refresh, every lookup
            goes to the store.
        on_trust_change: called (in the refreshing thread) with new trust material.
        monotonic: injectable monotonic clock for staleness.
    """

    def __init__(
        self,
        *,
        factory: sessionmaker[Session],
        trust_loader: Callable[[Session], TrustMaterialLike],
        max_staleness: timedelta = timedelta(seconds=4),
        on_trust_change: Callable[[TrustMaterialLike], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self._trust_loader = trust_loader
        self._max_staleness = max_staleness.total_seconds()
        self._on_trust_change = on_trust_change
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._entries: dict[str, CacheEntry] = {}
        self._users: dict[int, UserRecord] = {}
        self._snapshot = _Snapshot()
        self._watermark: datetime | None = None
        self._last_success: float | None = None
        self._refreshes = 0
        self._generation = 0
        self.trust: TrustMaterialLike | None = None

    # --- reads (event loop)
    @property
    def fresh(self) -> bool:
        last = self._last_success
        return last is not None and self._monotonic() - last <= self._max_staleness

    @property
    def generation(self) -> int:
        """A counter that moves whenever an answer of this cache may have changed: every
        load, and every refresh round (changed or not). A decision made on this cache's
        answers holds only while the counter has the value it had *before* the answers were
        read (``gateway.auth._decision_memo``, issue 11)."""
        return self._generation

    @property
    def retired_generations(self) -> dict[int, datetime]:
        return self._snapshot.retired

    def get(self, fingerprint: str) -> CacheEntry | _Miss:
        """The cached entry, or MISS (also whenever the cache is stale)."""
        if not self.fresh:
            return MISS
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is None:
                return MISS
            # The user may have changed since the entry was made (status, e-mail).
            if entry.record is not None:
                user = self._users.get(entry.record.user_id)
                if user != entry.user:
                    entry = CacheEntry(record=entry.record, user=user)
                    self._entries[fingerprint] = entry
            return entry

    def user(self, user_id: int) -> UserRecord | _Miss | None:
        if not self.fresh:
            return MISS
        with self._lock:
            return self._users.get(user_id, MISS)

    # --- loads (worker thread)
    def _store(self, fingerprint: str, entry: CacheEntry) -> None:
        with self._lock:
            if len(self._entries) >= _CACHE_LIMIT:
                for key in list(self._entries)[: _CACHE_LIMIT // 10]:
                    del self._entries[key]
            self._entries[fingerprint] = entry
            if entry.user is not None:
                self._users[entry.user.id] = entry.user
            self._generation += 1

    def _load_users(self, db: Session, ids: Iterable[int]) -> dict[int, UserRecord]:
        found: dict[int, UserRecord] = {}
        id_list = list(ids)
        for start in range(0, len(id_list), 500):
            rows = [
                _UserRow._make(columns)
                for columns in db.execute(
                    select(*_USER_COLUMNS)
                    .join(Organisation, User.organisation_id == Organisation.id)
                    .join(Office, User.office_id == Office.id)
                    .outerjoin(_HEAD_OFFICE, Office.head_office_id == _HEAD_OFFICE.id)
                    .where(User.id.in_(id_list[start : start + 500]))
                )
            ]
            office_ids = {r.office_id for r in rows}
            heads = _head_users(
                db, office_ids | {r.head_office_id for r in rows if r.head_office_id is not None}
            )
            refusals = _refusals(db, rows)
            for row in rows:
                found[row.id] = _user(row, heads, refusals)
        return found

    def load(self, fingerprint: str) -> CacheEntry:
        """Read one fingerprint from the store (blocking) and cache the answer."""
        with self._factory() as db:
            row = db.scalars(
                select(Certificate).where(Certificate.fingerprint_sha256 == fingerprint)
            ).one_or_none()
            if row is None:
                entry = CacheEntry(record=None, user=None)
            else:
                users = self._load_users(db, [row.user_id])
                entry = CacheEntry(record=_record(row), user=users.get(row.user_id))
        self._store(fingerprint, entry)
        return entry

    def load_user(self, user_id: int) -> UserRecord | None:
        with self._factory() as db:
            user = self._load_users(db, [user_id]).get(user_id)
        with self._lock:
            if user is not None:
                self._users[user_id] = user
            self._generation += 1
        return user

    def refresh(self) -> None:
        """One polling round (blocking; run it in a thread). Raises if the store fails."""
        with self._factory() as db:
            generations = tuple(
                sorted(
                    (g.id, g.status.value, g.retired_at) for g in db.scalars(select(CAGeneration))
                )
            )
            generation_key = tuple((gid, status) for gid, status, _ in generations)
            retired = {
                gid: retired_at or datetime.min
                for gid, status, retired_at in generations
                if status == GenerationStatus.RETIRED.value
            }
            new_trust = None
            if generation_key != self._snapshot.generation_key or self.trust is None:
                new_trust = self._trust_loader(db) if generations else None
            self._refreshes += 1
            full = self._refreshes % FULL_REFRESH_EVERY == 0
            with self._lock:
                cached = [fp for fp, e in self._entries.items() if e.record is not None]
                user_ids = set(self._users)
            if full:
                changed_rows: Sequence[Certificate] = []
                for start in range(0, len(cached), 500):
                    changed_rows = [
                        *changed_rows,
                        *db.scalars(
                            select(Certificate).where(
                                Certificate.fingerprint_sha256.in_(cached[start : start + 500])
                            )
                        ),
                    ]
            else:
                query = select(Certificate).where(Certificate.revoked_at.is_not(None))
                if self._watermark is not None:
                    query = query.where(
                        Certificate.revoked_at > self._watermark - REVOCATION_OVERLAP
                    )
                else:
                    query = query.where(
                        Certificate.fingerprint_sha256.in_(cached) if cached else false()
                    )
                changed_rows = list(db.scalars(query))
            if self._watermark is None:
                self._watermark = db.scalar(select(func.max(Certificate.revoked_at)))
            users = self._load_users(db, user_ids) if user_ids else {}
        with self._lock:
            for row in changed_rows:
                if row.revoked_at is not None and (
                    self._watermark is None or row.revoked_at > self._watermark
                ):
                    self._watermark = row.revoked_at
                old = self._entries.get(row.fingerprint_sha256)
                if old is not None and old.record != _record(row):
                    self._entries[row.fingerprint_sha256] = CacheEntry(
                        record=_record(row), user=old.user
                    )
            for user_id in user_ids:
                if user_id not in users:
                    self._users.pop(user_id, None)
                elif self._users.get(user_id) != users[user_id]:
                    self._users[user_id] = users[user_id]
            self._snapshot = _Snapshot(retired=retired, generation_key=generation_key)
        if new_trust is not None:
            self.trust = new_trust
            if self._on_trust_change is not None:
                self._on_trust_change(new_trust)
        with self._lock:
            # SECURITY (issue 11): after the new answers and the new verifier are in place,
            # so a memoised decision made before this round is not reused after it.
            self._generation += 1
        self._last_success = self._monotonic()
