"""The signer (issue 12): it re-checks user, session, freshness and limits in the store,
issues in one transaction, replays a retried request id, and answers over a 0660 Unix socket."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ca import (
    RATE_LIMITED,
    SIGNER_PURPOSE,
    SIGNER_RATE_GLOBAL,
    SIGNER_RATE_USER,
    CertificateAuthority,
    IssueRequest,
    SessionRules,
    Signer,
    SignerAnswer,
    SignerClient,
    SignerMetrics,
    SignerSettings,
    SignerSocketInUse,
    SignerUnavailable,
    bind_socket,
    run_signer,
    signer_app,
)
from store import (
    FRESH_BASIC_KEY,
    AuditEvent,
    Certificate,
    Level,
    MailOutbox,
    Sealer,
    SignerRequest,
    User,
    UserStatus,
    WebSession,
    transaction,
)
from tests.conftest import TEST_SECRET_KEY, FakeClock, UserFactory, password_mail_for

RULES = SessionRules(
    idle_timeout=timedelta(minutes=15), fresh_login=timedelta(minutes=5), downloads_per_window=3
)


def make_signer(
    authority: CertificateAuthority,
    sessions: sessionmaker[Session],
    settings: SignerSettings | None = None,
    refusals: list[str] | None = None,
) -> Signer:
    return Signer(
        authority=authority,
        sessions=sessions,
        settings=settings or SignerSettings(),
        rules=RULES,
        answer_sealer=Sealer(secret=TEST_SECRET_KEY, purpose=SIGNER_PURPOSE),
        on_rate_refusal=(refusals.append if refusals is not None else lambda reason: None),
    )


def start_session(
    sessions: sessionmaker[Session],
    clock: FakeClock,
    user_id: int,
    *,
    level: Level = Level.BASIC,
    authenticated_ago: timedelta | None = timedelta(0),
    fingerprint: str | None = None,
    data: dict[str, str] | None = None,
) -> str:
    """A gateway session row as the gateway writes it; returns its id."""
    session_id = hashlib.sha256(secrets.token_bytes(32)).hexdigest()
    now = clock()
    with transaction(sessions) as db:
        db.add(
            WebSession(
                id=session_id,
                user_id=user_id,
                level=level,
                method="password",
                created_at=now,
                authenticated_at=now - authenticated_ago if authenticated_ago is not None else None,
                last_seen_at=now,
                absolute_expires_at=now + timedelta(hours=12),
                cert_fingerprint=fingerprint,
                csrf_token="x" * 64,
                data=data or {},
            )
        )
    return session_id


def ask(signer: Signer, user_id: int, session_id: str, request_id: str | None = None) -> object:
    return signer.issue(
        IssueRequest(
            request_id=request_id or secrets.token_hex(16),
            user_id=user_id,
            session_id=session_id,
            client_addr="127.0.0.1",
        )
    )


def count(sessions: sessionmaker[Session], model: type[object]) -> int:
    with transaction(sessions) as db:
        return db.scalar(select(func.count()).select_from(model)) or 0  # type: ignore[arg-type]


def test_issues_with_certificate_row_password_mail_and_audit_in_one_go(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    user = make_user()
    signer = make_signer(authority, sessions)
    answer = signer.issue(
        IssueRequest(
            request_id="r-1", user_id=user.id, session_id=start_session(sessions, clock, user.id)
        )
    )
    assert answer.outcome == "issued" and answer.pkcs12 and answer.serial
    password = password_mail_for(sessions, answer.serial)
    key, cert, _ = pkcs12.load_key_and_certificates(answer.pkcs12, password.encode())
    assert key is not None and cert is not None
    assert format(cert.serial_number, "x") == answer.serial
    with transaction(sessions) as db:
        row = db.scalar(select(Certificate).where(Certificate.serial == answer.serial))
        assert row is not None and row.issued_by == f"user:{user.id}"
        actions = set(db.scalars(select(AuditEvent.action).where(AuditEvent.user_id == user.id)))
        assert {"cert.issue", "cert.download"} <= actions
        stored = db.get(SignerRequest, "r-1")
        assert stored is not None and stored.outcome == "issued"
        # SECURITY: the stored answer (it holds the PKCS#12) is sealed, not readable.
        assert answer.serial not in stored.answer_sealed


def test_a_retried_request_id_replays_the_answer_without_a_second_certificate(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    user = make_user()
    signer = make_signer(authority, sessions)
    session_id = start_session(sessions, clock, user.id)
    first = ask(signer, user.id, session_id, "same-id")
    mails = count(sessions, MailOutbox)
    again = ask(signer, user.id, session_id, "same-id")
    assert again.replayed and not first.replayed  # type: ignore[attr-defined]
    assert again.pkcs12 == first.pkcs12 and again.serial == first.serial  # type: ignore[attr-defined]
    assert count(sessions, Certificate) == 1
    assert count(sessions, MailOutbox) == mails
    # SECURITY: the request id is no bearer token for another user or session.
    other = make_user()
    stolen = ask(signer, other.id, start_session(sessions, clock, other.id), "same-id")
    assert stolen.outcome == "refused" and stolen.pkcs12 is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "problem",
    [
        "ended",
        "other_user",
        "expired_absolute",
        "idle",
        "restricted",
        "not_fresh",
        "unknown",
        "disabled",
    ],
)
def test_refuses_when_the_store_disagrees_with_the_gateway(
    problem: str,
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    user = make_user()
    signer = make_signer(authority, sessions)
    level = Level.RESTRICTED if problem == "restricted" else Level.BASIC
    ago = timedelta(minutes=6) if problem == "not_fresh" else timedelta(0)
    session_id = start_session(sessions, clock, user.id, level=level, authenticated_ago=ago)
    other = make_user()
    asked_for = user.id
    with transaction(sessions) as db:
        row = db.get_one(WebSession, session_id)
        if problem == "ended":
            row.ended_at = clock()
        elif problem == "other_user":
            asked_for = other.id
        elif problem == "expired_absolute":
            row.absolute_expires_at = clock() - timedelta(seconds=1)
        elif problem == "idle":
            row.last_seen_at = clock() - timedelta(minutes=15)
        elif problem == "unknown":
            session_id = "0" * 64
        elif problem == "disabled":
            db.get_one(User, user.id).status = UserStatus.DISABLED
    answer = ask(signer, asked_for, session_id)
    assert answer.outcome == "refused", problem  # type: ignore[attr-defined]
    assert count(sessions, Certificate) == 0
    assert count(sessions, MailOutbox) == 0
    with transaction(sessions) as db:
        refused = db.scalars(select(AuditEvent).where(AuditEvent.action == "signer.refused")).all()
        assert len(refused) == 1


def test_fresh_by_a_password_reconfirmed_inside_a_strong_session_and_by_certificate(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    user = make_user()
    signer = make_signer(authority, sessions)
    reconfirmed = start_session(
        sessions,
        clock,
        user.id,
        level=Level.STRONG,
        authenticated_ago=timedelta(hours=1),
        data={FRESH_BASIC_KEY: (clock() - timedelta(minutes=1)).isoformat()},
    )
    first = ask(signer, user.id, reconfirmed)
    assert first.outcome == "issued"  # type: ignore[attr-defined]
    with transaction(sessions) as db:
        fingerprint = db.scalars(select(Certificate.fingerprint_sha256)).one()
    by_certificate = start_session(
        sessions,
        clock,
        user.id,
        level=Level.STRONG,
        authenticated_ago=None,
        fingerprint=fingerprint,
    )
    assert ask(signer, user.id, by_certificate).outcome == "issued"  # type: ignore[attr-defined]
    # Someone else's certificate session does not make this user's download fresh.
    other = make_user()
    foreign = start_session(
        sessions,
        clock,
        other.id,
        level=Level.STRONG,
        authenticated_ago=None,
        fingerprint=fingerprint,
    )
    assert ask(signer, other.id, foreign).reason == "not_fresh"  # type: ignore[attr-defined]


def test_the_brokers_download_limit_and_the_signers_own_rates(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    refusals: list[str] = []
    settings = SignerSettings(user_rate=2, global_rate=3)
    signer = make_signer(authority, sessions, settings, refusals)
    metrics = SignerMetrics()
    signer_app(signer, metrics)  # the app counts rate refusals into the metrics
    counted = signer.on_rate_refusal
    signer.on_rate_refusal = lambda reason: (refusals.append(reason), counted(reason))[0]
    first, second = make_user(), make_user()
    s1 = start_session(sessions, clock, first.id)
    assert [ask(signer, first.id, s1).outcome for _ in range(2)] == ["issued"] * 2  # type: ignore[attr-defined]
    assert ask(signer, first.id, s1).reason == SIGNER_RATE_USER  # type: ignore[attr-defined]
    s2 = start_session(sessions, clock, second.id)
    assert ask(signer, second.id, s2).outcome == "issued"  # type: ignore[attr-defined]
    assert ask(signer, second.id, s2).reason == SIGNER_RATE_GLOBAL  # type: ignore[attr-defined]
    assert refusals == [SIGNER_RATE_USER, SIGNER_RATE_GLOBAL]
    for limit in ("user", "global"):
        value = metrics.registry.get_sample_value(
            "brokergate_signer_rate_limited_total", {"limit": limit}
        )
        assert value == 1, limit
    with transaction(sessions) as db:
        reasons = [
            e.details["reason"]
            for e in db.scalars(select(AuditEvent).where(AuditEvent.action == "signer.refused"))
        ]
    assert reasons == [SIGNER_RATE_USER, SIGNER_RATE_GLOBAL]
    # An hour later the signer's window has passed; the broker's own daily limit (3) holds.
    clock.advance(timedelta(hours=1, seconds=1))
    s1 = start_session(sessions, clock, first.id)
    assert ask(signer, first.id, s1).outcome == "issued"  # type: ignore[attr-defined]
    limited = ask(signer, first.id, s1)
    assert limited.reason == RATE_LIMITED and limited.until is not None  # type: ignore[attr-defined]


def test_old_requests_are_deleted_after_the_retention(
    sessions: sessionmaker[Session],
    authority: CertificateAuthority,
    clock: FakeClock,
    make_user: UserFactory,
) -> None:
    user = make_user()
    signer = make_signer(authority, sessions, SignerSettings(request_retention=timedelta(hours=2)))
    ask(signer, user.id, start_session(sessions, clock, user.id))
    clock.advance(timedelta(hours=1))
    assert signer.forget_old_requests() == 0
    clock.advance(timedelta(hours=1, seconds=1))
    assert signer.forget_old_requests() == 1
    assert count(sessions, SignerRequest) == 0
    assert count(sessions, Certificate) == 1  # the certificate itself stays


def test_malformed_requests_are_refused_before_the_store() -> None:
    for bad in (
        [],
        {"request_id": "r", "user_id": "1", "session_id": "0" * 64},
        {"request_id": "r", "user_id": True, "session_id": "0" * 64},
        {"request_id": "", "user_id": 1, "session_id": "0" * 64},
        {"request_id": "r", "user_id": 1, "session_id": "short"},
        {"request_id": "r", "user_id": 1, "session_id": "0" * 64, "level": "strong"},
    ):
        with pytest.raises(ValueError):
            IssueRequest.from_json(bad)


# --- over the socket -------------------------------------------------------------------


@pytest.fixture
def socket_path() -> Iterator[Path]:
    # AF_UNIX paths are short (108 bytes): pytest's tmp_path can be longer.
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"bg-{secrets.token_hex(4)}"
    folder.mkdir(mode=0o700)
    yield folder / "signer.sock"
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


async def test_over_the_unix_socket_with_mode_0660_and_a_clean_stop(
    sqlite_engine: object,
    socket_path: Path,
    clock: FakeClock,
    ca_settings: object,
) -> None:
    from store import OUTBOX_PURPOSE, session_factory
    from tests.conftest import TEST_SECRET_KEY as SECRET

    sessions = session_factory(sqlite_engine)  # type: ignore[arg-type]
    authority = CertificateAuthority(
        settings=ca_settings,  # type: ignore[arg-type]
        sessions=sessions,
        clock=clock,
        outbox_sealer=Sealer(secret=SECRET, purpose=OUTBOX_PURPOSE),
    )
    await asyncio.to_thread(authority.init, "test:setup")
    from ca import create_user

    with transaction(sessions) as db:
        user_id = create_user(
            db,
            broker_number="60/123/4567",
            email="a@example.org",
            name="Erika Mustermann",
            locale="de",
            now=clock(),
            actor="test",
        ).id
    session_id = start_session(sessions, clock, user_id)
    sock = bind_socket(socket_path)
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o660
    with pytest.raises(SignerSocketInUse):
        bind_socket(socket_path)  # a live signer is not replaced
    stop = asyncio.Event()
    ready = asyncio.Event()
    server = asyncio.create_task(
        run_signer(signer_app(make_signer(authority, sessions)), sock, ready=ready.set, stop=stop)
    )
    client = SignerClient(socket_path=socket_path, timeout=30)
    try:
        await asyncio.wait_for(ready.wait(), 10)
        assert await client.healthy()
        request = IssueRequest(request_id="sock-1", user_id=user_id, session_id=session_id)
        answer = await client.issue(request)
        assert answer.outcome == "issued" and answer.pkcs12
        again = await client.issue(request)
        assert again.replayed and again.serial == answer.serial
    finally:
        stop.set()
        await asyncio.wait_for(server, 30)
        sock.close()
    # Stopped: the client says so, clearly, after its retries.
    down = SignerClient(socket_path=socket_path, timeout=2, retry_delays=(0.0, 0.01))
    with pytest.raises(SignerUnavailable):
        await down.issue(IssueRequest(request_id="sock-2", user_id=user_id, session_id=session_id))
    await down.close()
    await client.close()
    # A restarted signer (the stale socket file is replaced) loses no request: the retry
    # of the request whose answer the gateway never got is replayed, not issued again.
    sock = bind_socket(socket_path)
    stop, ready = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(
        run_signer(signer_app(make_signer(authority, sessions)), sock, ready=ready.set, stop=stop)
    )
    client = SignerClient(socket_path=socket_path, timeout=30)
    try:
        await asyncio.wait_for(ready.wait(), 10)
        replayed = await client.issue(request)
        assert replayed.replayed and replayed.serial == answer.serial
    finally:
        stop.set()
        await asyncio.wait_for(server, 30)
        sock.close()
        await client.close()
    assert count(sessions, Certificate) == 1
    authority.close()


async def test_sigterm_lets_the_request_in_flight_finish(
    sqlite_engine: object,
    socket_path: Path,
    clock: FakeClock,
    ca_settings: object,
) -> None:
    """SIGTERM while a request is being answered: no new connection is accepted, the
    running one completes (its certificate and answer committed), then the signer exits."""
    import signal
    import threading

    from ca import create_user
    from store import OUTBOX_PURPOSE, session_factory

    sessions = session_factory(sqlite_engine)  # type: ignore[arg-type]
    authority = CertificateAuthority(
        settings=ca_settings,  # type: ignore[arg-type]
        sessions=sessions,
        clock=clock,
        outbox_sealer=Sealer(secret=TEST_SECRET_KEY, purpose=OUTBOX_PURPOSE),
    )
    await asyncio.to_thread(authority.init, "test:setup")
    with transaction(sessions) as db:
        user_id = create_user(
            db,
            broker_number="60/123/4567",
            email="a@example.org",
            name="Erika Mustermann",
            locale="de",
            now=clock(),
            actor="test",
        ).id
    session_id = start_session(sessions, clock, user_id)
    entered, release = threading.Event(), threading.Event()

    class GatedSigner(Signer):
        def issue(self, request: IssueRequest) -> SignerAnswer:
            entered.set()
            release.wait(30)
            return super().issue(request)

    signer = GatedSigner(
        authority=authority,
        sessions=sessions,
        settings=SignerSettings(),
        rules=RULES,
        answer_sealer=Sealer(secret=TEST_SECRET_KEY, purpose=SIGNER_PURPOSE),
    )
    sock = bind_socket(socket_path)
    stop, ready = asyncio.Event(), asyncio.Event()
    server = asyncio.create_task(run_signer(signer_app(signer), sock, ready=ready.set, stop=stop))
    client = SignerClient(socket_path=socket_path, timeout=30, retry_delays=(0.0,))
    probe = SignerClient(socket_path=socket_path, timeout=2, retry_delays=(0.0,))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        in_flight = asyncio.create_task(
            client.issue(IssueRequest(request_id="r", user_id=user_id, session_id=session_id))
        )
        assert await asyncio.to_thread(entered.wait, 10)
        os.kill(os.getpid(), signal.SIGTERM)  # the real signal: run_signer's handler
        await asyncio.wait_for(stop.wait(), 10)
        for _ in range(200):  # bounded: until the listener is closed
            if not await probe.healthy():
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the signer still accepts connections after SIGTERM")
        assert not server.done()  # waiting for the request in flight
        release.set()
        answer = await asyncio.wait_for(in_flight, 30)
        assert answer.outcome == "issued" and answer.pkcs12
        await asyncio.wait_for(server, 30)
    finally:
        release.set()
        stop.set()
        sock.close()
        await client.close()
        await probe.close()
        authority.close()
    assert count(sessions, Certificate) == 1
    assert count(sessions, SignerRequest) == 1
