"""Downloads per second: through the signer (issue 12) against in-process issuance.

In-process = ``CertificateAuthority.issue_certificate`` in the caller's process, as the
gateway did while it held the CA key. Signer = the gateway's ``SignerClient`` asking a real
signer (``ca.run_signer`` on a Unix socket, its own event loop in a thread of this process)
for the same issuance, which adds the socket round trip, the store re-checks (user,
session, freshness, the download limit, the signer's rates) and the sealed stored answer.
Both issue RSA-2048 leaves (the default) on their own SQLite store; the two are
interleaved in rounds so that machine noise hits both alike. Target: signer ≥ 0.8 x
in-process. With softhsm2 installed the signer runs once more with its CA keys in a
SoftHSM2 token.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from ca import (
    SIGNER_PURPOSE,
    CASettings,
    CertificateAuthority,
    IssueRequest,
    SessionRules,
    Signer,
    SignerClient,
    SignerSettings,
    bind_socket,
    create_user,
    make_authority,
    run_signer,
    signer_app,
)
from store import Level, Sealer, WebSession, make_engine, session_factory, transaction, upgrade
from tests.softhsm import make_token, softhsm_module

ROUNDS = int(os.environ.get("BENCH_SIGNER_ROUNDS", "5"))
PER_ROUND = int(os.environ.get("BENCH_SIGNER_PER_ROUND", "20"))
SECRET = b"bench-secret-key-0123456789"
# No limit may refuse during the bench: it measures the work, not the limits.
UNLIMITED = SignerSettings(
    user_rate=1_000_000, global_rate=1_000_000, request_retention=timedelta(hours=1)
)
RULES = SessionRules(
    idle_timeout=timedelta(hours=1),
    fresh_login=timedelta(hours=1),
    downloads_per_window=1_000_000,
)


def _store(
    folder: Path, name: str, settings: CASettings
) -> tuple[CertificateAuthority, sessionmaker[Session], int, str]:
    engine = make_engine(f"sqlite:///{folder / f'{name}.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    authority = make_authority(settings=settings, sessions=sessions, secret_key=SECRET)
    authority.init("bench")
    now = datetime.now(UTC)
    session_id = hashlib.sha256(secrets.token_bytes(32)).hexdigest()
    with transaction(sessions) as db:
        user_id = create_user(
            db,
            broker_number="60/123/4567",
            email="bench@example.org",
            name="Bench",
            now=now,
            actor="bench",
        ).id
        db.add(
            WebSession(
                id=session_id,
                user_id=user_id,
                level=Level.BASIC,
                method="password",
                created_at=now,
                authenticated_at=now,
                last_seen_at=now,
                absolute_expires_at=now + timedelta(hours=12),
                csrf_token="x" * 64,
                data={},
            )
        )
    return authority, sessions, user_id, session_id


class _SignerThread:
    """A real signer on a Unix socket, served by an event loop in a thread of its own."""

    def __init__(self, signer: Signer, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._sock = bind_socket(socket_path)
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, args=(signer,), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the bench signer did not start")

    def _run(self, signer: Signer) -> None:
        async def serve() -> None:
            self._stop = asyncio.Event()
            await run_signer(signer_app(signer), self._sock, ready=self._ready.set, stop=self._stop)

        self._loop.run_until_complete(serve())

    def close(self) -> None:
        stop = self._stop
        if stop is not None:
            self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(30)
        self._sock.close()
        self.socket_path.unlink(missing_ok=True)


async def _through_signer(client: SignerClient, user_id: int, session_id: str, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        answer = await client.issue(
            IssueRequest(request_id=secrets.token_hex(16), user_id=user_id, session_id=session_id)
        )
        if answer.outcome != "issued":
            raise RuntimeError(f"the bench signer refused: {answer.reason}")
    return n / (time.perf_counter() - started)


def _in_process(authority: CertificateAuthority, user_id: int, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        authority.issue_certificate(user_id, f"user:{user_id}")
    return n / (time.perf_counter() - started)


def _measure(folder: Path, signer_settings: CASettings, label: str) -> tuple[float, float]:
    base = CASettings(passphrase="bench", ca_key_type="rsa3072")
    local, _, local_user, _ = _store(folder, f"local-{label}", base)
    remote, sessions, user_id, session_id = _store(folder, f"signer-{label}", signer_settings)
    signer = Signer(
        authority=remote,
        sessions=sessions,
        settings=UNLIMITED,
        rules=RULES,
        answer_sealer=Sealer(secret=SECRET, purpose=SIGNER_PURPOSE),
    )
    server = _SignerThread(signer, Path(tempfile.mkdtemp(prefix="bg-", dir="/tmp")) / "s.sock")
    client = SignerClient(socket_path=server.socket_path, timeout=60)
    loop = asyncio.new_event_loop()
    try:
        local.issue_certificate(local_user, "bench")  # warm-up: opens the CA key
        loop.run_until_complete(_through_signer(client, user_id, session_id, 1))
        signed: list[float] = []
        direct: list[float] = []
        for _ in range(ROUNDS):
            direct.append(_in_process(local, local_user, PER_ROUND))
            signed.append(
                loop.run_until_complete(_through_signer(client, user_id, session_id, PER_ROUND))
            )
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        server.close()
        server.socket_path.parent.rmdir()
        remote.close()
    return statistics.median(signed), statistics.median(direct)


def main() -> None:
    print(f"RSA-2048 leaves, CA key RSA-3072, {ROUNDS} rounds of {PER_ROUND} downloads")
    print(f"{'signer keys':<16} {'signer/s':>9} {'in-process/s':>13} {'ratio':>7}  ≥ 0.80")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        variants = [("encrypted file", CASettings(passphrase="bench", ca_key_type="rsa3072"))]
        module = softhsm_module()
        if module is not None:
            token = make_token(folder / "softhsm", module, label="brokergate-signer-bench")
            variants.append(
                (
                    "SoftHSM2 token",
                    replace(
                        variants[0][1],
                        passphrase="",
                        key_store="pkcs11",
                        pkcs11_module=token.module,
                        pkcs11_token_label=token.label,
                        pkcs11_pin=token.pin,
                    ),
                )
            )
        for index, (label, settings) in enumerate(variants):
            signed, direct = _measure(folder, settings, str(index))
            ratio = signed / direct
            verdict = "ok" if ratio >= 0.8 else "below target"
            print(f"{label:<16} {signed:>9.1f} {direct:>13.1f} {ratio:>7.3f}  {verdict}")
        if module is None:
            print("SoftHSM2 variant skipped: softhsm2 is not installed ('make system-deps')")
