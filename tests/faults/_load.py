"""The steady mix of broker traffic of the fault suite and the soak, and what it checks.

Each kind of client is one bounded asyncio loop at a fixed pace, round-robin over the
gateway replicas it is given:

=============  ===========================================================================
``sso``        a certificate broker's browser: keep-alive connection and cookie, GET a
               ``strong`` route
``handshake``  a certificate client without cookies on a new TLS connection per request
``password``   a new browser logs in with password (basic), GETs a ``basic`` route, then
               tries a ``strong`` one (must not be granted)
``tan``        a new browser logs in with broker number + the mailed TAN (basic)
``websocket``  a certificate broker opens ``/ws``, reads the level the upstream saw, echoes
``revoked``    the certificate revoked before the run: never granted anything
``anonymous``  no certificate, no cookie, a ``strong`` route: never granted
=============  ===========================================================================

Every answer is checked: whatever reaches the upstream carries the identity headers the
gateway set, and the level there must not exceed what that client's session has (its
email must be its own). A violation is recorded on the sample; the tests assert there
are none. Any other answer is classified by the gateway page it shows
(``page:store_unavailable`` …), in the client's language (de/en/nl, checked).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import aiohttp

from store import Level
from tests.conftest import REPO
from tests.faults._system import PASSWORD, TAN_RESEND_SECONDS, Broker, Replica, System
from tests.polling import async_wait_for

LANGUAGES = ("de", "en", "nl")
LEVEL_ORDER = [Level.ANONYMOUS, Level.RESTRICTED, Level.BASIC, Level.STRONG]
CLIENT_TIMEOUT = 30.0  # above every bound the gateway has (SQLite busy 15 s, upstream 3 s)
TAN_WAIT = 15.0  # the renewal process polls the outbox every second
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')

# Seconds between two iterations of one loop (the fixed rate); scaled by Mix(pace=...).
DEFAULT_INTERVALS = {
    "sso": 0.1,
    "handshake": 0.25,
    "password": 1.5,
    "tan": 2.0,
    "websocket": 0.5,
    "revoked": 0.5,
    "anonymous": 0.5,
}


@cache
def _titles() -> dict[str, dict[str, str]]:
    """language → {title text: page} of the gateway's error pages (from its catalogues)."""
    found: dict[str, dict[str, str]] = {}
    for language in LANGUAGES:
        titles: dict[str, str] = {}
        for path in sorted(REPO.glob(f"gateway/**/locales/{language}/*.json")):
            for key, text in json.loads(Path(path).read_text(encoding="utf-8")).items():
                if key.startswith("error.") and key.endswith(".title"):
                    titles[text] = key.removeprefix("error.").removesuffix(".title")
        found[language] = titles
    return found


@cache
def _alerts() -> dict[str, list[tuple[str, str]]]:
    """language → [(the fixed start of an error message, its key)], longest first: what a
    form's alert says, from the catalogues (the text before its first placeholder)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for language in LANGUAGES:
        starts: list[tuple[str, str]] = []
        for path in sorted(REPO.glob(f"gateway/**/locales/{language}/*.json")):
            for key, text in json.loads(Path(path).read_text(encoding="utf-8")).items():
                start = text.split("{", 1)[0].strip()
                if key.startswith("error.") and not key.endswith(".title") and len(start) > 8:
                    starts.append((start, key.removeprefix("error.")))
        found[language] = sorted(starts, key=lambda pair: -len(pair[0]))
    return found


_ALERT = re.compile(r'role="alert"[^>]*>(.*?)</', re.DOTALL)


def _alert_of(text: str, language: str) -> str:
    """``:alert:<key>`` for the error a form page shows (``:alert:?`` if unknown), else ""."""
    match = _ALERT.search(text)
    if match is None:
        return ""
    shown = " ".join(match.group(1).split())
    for start, key in _alerts()[language]:
        if shown.startswith(start):
            return f":alert:{key}"
    return ":alert:?"


# The status each fault's page must come with (gateway/_errors.py).
PAGE_STATUS = {"store_unavailable": 503, "upstream_unavailable": 502, "upstream_timeout": 504}
# nginx's own page when it cannot reach the gateway (deploy/nginx/brokergate-unavailable.html):
# static, all three languages in one, always 503.
GATEWAY_UNAVAILABLE_MARK = '<meta name="brokergate-page" content="gateway_unavailable">'


def classify_page(status: int, body: str, language: str, content_language: str) -> str:
    """``page:<name>`` for one of the gateway's error pages, else ``status:<code>`` (with
    ``:alert:<key>`` when a 4xx form page shows an error, e.g. ``status:401:alert:too_soon``).

    A 5xx that is not a fault's own page with its own status (the 500 page, a 503 without
    the "temporarily unavailable" page) is ``status:5xx:…``, so :func:`server_error` and
    every check for ``status:5`` catch it; a fault page with another status is
    ``page:<name>:status:<code>``. nginx's static page for a gateway it cannot reach is
    ``page:gateway_unavailable`` (all languages in one page, so no language check).
    """
    import html

    if GATEWAY_UNAVAILABLE_MARK in body:
        return "page:gateway_unavailable" + ("" if status == 503 else f":status:{status}")
    text = html.unescape(body)
    for title, page in _titles()[language].items():
        if f"<h1>{title}</h1>" in text:
            expected = PAGE_STATUS.get(page)
            if status >= 500 and status != expected:
                return f"status:{status}:page:{page}"
            if expected is not None and status != expected:
                return f"page:{page}:status:{status}"
            if content_language != language:
                return f"page:{page}:wrong-language:{content_language}"
            return f"page:{page}"
    return f"status:{status}" + (_alert_of(text, language) if status >= 400 else "")


@dataclass(frozen=True, kw_only=True)
class Sample:
    at: float  # time.monotonic() when the iteration started
    kind: str
    replica: str
    latency: float  # seconds, the whole iteration
    outcome: str  # "ok", "page:<name>", "status:<code>", "error:<exception>"
    violation: str | None = None  # a grant beyond the session's level, someone else's identity


class _Answer(Exception):
    """A step did not get what the happy path expects; ``outcome`` says what it got."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


@dataclass(kw_only=True)
class Mix:
    """The load; ``await mix.run(stop)`` until ``stop`` is set (or ``max_seconds``)."""

    system: System
    replicas: list[Replica]
    pace: float = 1.0  # multiplies every interval (2.0: half the rate)
    kinds: Iterable[str] = tuple(DEFAULT_INTERVALS)
    samples: list[Sample] = field(default_factory=list)
    _turn: int = 0
    _clients: list[aiohttp.ClientSession] = field(default_factory=list)

    def _replica(self) -> Replica:
        self._turn += 1
        return self.replicas[self._turn % len(self.replicas)]

    def _context(self, broker: Broker | None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.system.server.cert))
        if broker is not None and broker.cert is not None:
            context.load_cert_chain(str(broker.cert.cert), str(broker.cert.key))
        return context

    def _client(
        self, broker: Broker | None, language: str, *, keep_alive: bool = True
    ) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._context(broker), force_close=not keep_alive),
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # 127.0.0.1 is an IP address
            headers={"Accept-Language": language},
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT),
        )

    # --- checks

    @staticmethod
    def _granted(body: str, broker: Broker | None, allowed: Level) -> str | None:
        """The violation in an upstream answer, if any (None: within the session's level)."""
        try:
            headers = json.loads(body)["headers"]
        except (ValueError, KeyError, TypeError):
            return f"200 without the upstream's JSON: {body[:200]!r}"
        level = headers.get("x-brokergate-level")
        if level is None or Level(level) not in LEVEL_ORDER:
            return f"no level header: {headers}"
        if LEVEL_ORDER.index(Level(level)) > LEVEL_ORDER.index(allowed):
            return f"granted {level}, the session has at most {allowed.value}"
        email = headers.get("x-brokergate-email")
        if broker is None or email != broker.email:
            return f"identity {email!r} for a client of {broker.email if broker else None!r}"
        return None

    async def _get(
        self,
        client: aiohttp.ClientSession,
        url: str,
        language: str,
        *,
        broker: Broker | None,
        allowed: Level | None,
    ) -> tuple[str, str | None]:
        """GET ``url``: ("ok", None) when granted within ``allowed`` (None: must be refused),
        else the page it shows; a violation when granted what it must not be."""
        async with client.get(url, allow_redirects=False) as response:
            body = await response.text()
            if response.status == 200 and response.content_type == "application/json":
                if allowed is None:
                    return (
                        "granted",
                        f"granted {url} to a client that must be refused: {body[:300]}",
                    )
                return "ok", self._granted(body, broker, allowed)
            content_language = response.headers.get("Content-Language", "")
            return classify_page(response.status, body, language, content_language), None

    # --- the kinds

    async def _handshake(
        self, replica: Replica, broker: Broker, language: str
    ) -> tuple[str, str | None]:
        async with self._client(broker, language, keep_alive=False) as client:
            return await self._get(
                client, replica.url + "/vertrag/neu", language, broker=broker, allowed=Level.STRONG
            )

    async def _refused(
        self, replica: Replica, broker: Broker | None, language: str
    ) -> tuple[str, str | None]:
        async with self._client(broker, language, keep_alive=False) as client:
            return await self._get(
                client, replica.url + "/vertrag/akte", language, broker=broker, allowed=None
            )

    async def _form(self, client: aiohttp.ClientSession, url: str, language: str) -> str:
        async with client.get(url, allow_redirects=False) as response:
            body = await response.text()
            if response.status != 200:
                content_language = response.headers.get("Content-Language", "")
                raise _Answer(classify_page(response.status, body, language, content_language))
        match = _CSRF.search(body)
        if match is None:
            raise _Answer(f"status:{response.status}:no-csrf")
        return match.group(1)

    async def _post(
        self, client: aiohttp.ClientSession, url: str, form: dict[str, str], language: str
    ) -> str:
        async with client.post(url, data=form, allow_redirects=False) as response:
            body = await response.text()
            if response.status != 303:
                content_language = response.headers.get("Content-Language", "")
                raise _Answer(classify_page(response.status, body, language, content_language))
            return response.headers.get("Location", "")

    async def _after_login(
        self, client: aiohttp.ClientSession, replica: Replica, broker: Broker, language: str
    ) -> tuple[str, str | None]:
        outcome, violation = await self._get(
            client, replica.url + "/antrag/1", language, broker=broker, allowed=Level.BASIC
        )
        if violation or outcome != "ok":
            return outcome, violation
        # a basic session asking for a strong route: a page, never the upstream
        outcome, violation = await self._get(
            client, replica.url + "/vertrag/akte", language, broker=broker, allowed=Level.BASIC
        )
        return (
            "ok" if outcome.startswith("page:") or outcome.startswith("status:4") else outcome
        ), violation

    async def _password(
        self, replica: Replica, broker: Broker, language: str
    ) -> tuple[str, str | None]:
        async with self._client(None, language) as client:
            login = replica.url + "/_gateway/login/password"
            csrf = await self._form(client, login + "?next=/antrag/1", language)
            form = {
                "identifier": broker.email,
                "password": PASSWORD,
                "next": "/antrag/1",
                "csrf": csrf,
            }
            await self._post(client, login, form, language)
            return await self._after_login(client, replica, broker, language)

    async def _tan(self, replica: Replica, broker: Broker, language: str) -> tuple[str, str | None]:
        async with self._client(None, language) as client:
            start = replica.url + "/_gateway/login/broker"
            csrf = await self._form(client, start + "?next=/antrag/1", language)
            # a broker does not ask again within the resend interval (the gateway would
            # answer TooSoon); the last request may have been the previous test's
            last = self.system.tan_requested_at.get(broker.email)
            if last is not None:
                await asyncio.sleep(max(0.0, last + TAN_RESEND_SECONDS + 0.5 - time.monotonic()))
            self.system.tan_requested_at[broker.email] = time.monotonic()
            before = self.system.mailbox.count()
            form = {"broker": broker.broker_number, "email": broker.email, "next": "/antrag/1"}
            await self._post(client, start, {**form, "csrf": csrf}, language)
            tan_page = start + "/tan"
            csrf = await self._form(client, tan_page + "?next=/antrag/1", language)
            try:
                tan = await async_wait_for(
                    lambda: self.system.mailbox.tan_for(
                        broker.email, before, exclude=self.system.tans_used
                    ),
                    timeout=TAN_WAIT,
                    interval=0.2,
                    message=f"the TAN mail to {broker.email}",
                )
            except AssertionError:  # the renewal process did not deliver it in time
                return "no-tan-mail", None
            self.system.tans_used.add(tan)
            await self._post(
                client, tan_page, {"tan": tan, "next": "/antrag/1", "csrf": csrf}, language
            )
            return await self._after_login(client, replica, broker, language)

    async def _websocket(
        self, replica: Replica, client: aiohttp.ClientSession, broker: Broker, language: str
    ) -> tuple[str, str | None]:
        # the session cookie first (a page of a strong route), then the socket on it
        async with client.ws_connect(replica.url + "/ws", autoclose=True, heartbeat=None) as ws:
            first = await ws.receive(timeout=10)
            if first.type is not aiohttp.WSMsgType.TEXT:
                return f"ws:{first.type.name}", None
            level = str(first.data).removeprefix("level:")
            if level != Level.STRONG.value:
                return "ok", f"websocket granted with level {level!r}"
            await ws.send_str("ping")
            echo = await ws.receive(timeout=10)
            if echo.type is not aiohttp.WSMsgType.TEXT or echo.data != "echo:ping":
                return f"ws:{echo.type.name}", None
            return "ok", None

    # --- the loops

    async def _loop(
        self,
        kind: str,
        stop: asyncio.Event,
        step: Callable[[Replica, int], Awaitable[tuple[str, str | None]]],
        interval: float,
    ) -> None:
        n = 0
        while True:  # at least one round; bounded by ``stop``
            replica = self._replica()
            started = time.monotonic()
            try:
                outcome, violation = await step(replica, n)
            except _Answer as answer:
                outcome, violation = answer.outcome, None
            except aiohttp.WSServerHandshakeError as exc:
                outcome, violation = f"ws-handshake:{exc.status}", None
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                outcome, violation = f"error:{type(exc).__name__}", None
            elapsed = time.monotonic() - started
            self.samples.append(
                Sample(
                    at=started,
                    kind=kind,
                    replica=replica.name,
                    latency=elapsed,
                    outcome=outcome,
                    violation=violation,
                )
            )
            n += 1
            # a fixed rate: the next iteration starts one interval after this one started
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, interval - elapsed))
            if stop.is_set():
                return

    async def run(self, stop: asyncio.Event) -> None:
        system = self.system
        loops: list[Awaitable[None]] = []
        wanted = set(self.kinds)
        certs = system.cert_brokers

        def every(kind: str) -> float:
            return DEFAULT_INTERVALS[kind] * self.pace

        try:
            if "sso" in wanted:
                for i, broker in enumerate(certs[:2]):
                    language = LANGUAGES[i % 3]
                    client = self._client(broker, language)
                    self._clients.append(client)

                    async def sso(
                        replica: Replica, n: int, c=client, b=broker, lang=language
                    ) -> tuple[str, str | None]:
                        return await self._get(
                            c, replica.url + "/vertrag/akte", lang, broker=b, allowed=Level.STRONG
                        )

                    loops.append(self._loop("sso", stop, sso, every("sso")))
            if "handshake" in wanted:

                async def handshake(replica: Replica, n: int) -> tuple[str, str | None]:
                    broker = certs[n % len(certs)]
                    return await self._handshake(replica, broker, LANGUAGES[n % 3])

                loops.append(self._loop("handshake", stop, handshake, every("handshake")))
            if "websocket" in wanted:
                broker = certs[-1]
                ws_client = self._client(broker, "en")
                self._clients.append(ws_client)

                async def websocket(replica: Replica, n: int) -> tuple[str, str | None]:
                    return await self._websocket(replica, ws_client, broker, "en")

                loops.append(self._loop("websocket", stop, websocket, every("websocket")))
            if "password" in wanted:

                async def password(replica: Replica, n: int) -> tuple[str, str | None]:
                    broker = system.password_brokers[n % len(system.password_brokers)]
                    return await self._password(replica, broker, LANGUAGES[n % 3])

                loops.append(self._loop("password", stop, password, every("password")))
            if "tan" in wanted:

                async def tan(replica: Replica, n: int) -> tuple[str, str | None]:
                    broker = system.tan_brokers[n % len(system.tan_brokers)]
                    return await self._tan(replica, broker, LANGUAGES[n % 3])

                loops.append(self._loop("tan", stop, tan, every("tan")))
            if "revoked" in wanted:

                async def revoked(replica: Replica, n: int) -> tuple[str, str | None]:
                    return await self._refused(replica, system.revoked, LANGUAGES[n % 3])

                loops.append(self._loop("revoked", stop, revoked, every("revoked")))
            if "anonymous" in wanted:

                async def anonymous(replica: Replica, n: int) -> tuple[str, str | None]:
                    return await self._refused(replica, None, LANGUAGES[n % 3])

                loops.append(self._loop("anonymous", stop, anonymous, every("anonymous")))
            await asyncio.gather(*loops)
        finally:
            for client in self._clients:
                await client.close()

    # --- reading the samples

    def violations(self) -> list[Sample]:
        return [s for s in self.samples if s.violation]

    def outcomes(self, since: float = 0.0, until: float = float("inf")) -> Counter[tuple[str, str]]:
        return Counter((s.kind, s.outcome) for s in self.samples if since <= s.at < until)


# What the refused kinds get when nothing is wrong: the revoked-certificate page (403) and
# the login page (401); never the portal.
REFUSAL = {"revoked": "status:403", "anonymous": "status:401"}


def healthy(sample: Sample) -> bool:
    """The answer the kind gets when nothing is wrong."""
    if sample.violation:
        return False
    return sample.outcome == REFUSAL.get(sample.kind, "ok")


async def run_for(mix: Mix, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(mix.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, CLIENT_TIMEOUT + 5)


async def probe(
    system: System,
    replica: Replica,
    broker: Broker | None,
    path: str,
    language: str,
    *,
    must_refuse: bool = False,
) -> tuple[str, str | None]:
    """One GET on a new connection (the broker's certificate, no cookie): its outcome and
    violation, as the mix records them. A gateway page answered 200 is ``status:200``."""
    mix = Mix(system=system, replicas=[replica])
    allowed = None if must_refuse else (Level.STRONG if broker and broker.cert else Level.ANONYMOUS)
    try:
        async with mix._client(broker, language, keep_alive=False) as client:
            return await mix._get(
                client, replica.url + path, language, broker=broker, allowed=allowed
            )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"error:{type(exc).__name__}", None


async def until(
    check: Callable[[], Awaitable[tuple[str, str | None]]],
    accept: Callable[[str], bool],
    *,
    within: float,
    started: float | None = None,
    strict: bool = True,
    what: str = "the expected answer",
) -> float:
    """Repeat ``check`` until its outcome is accepted; seconds since ``started`` (or now).
    ``strict``: every answer on the way must be free of violations.

    Raises:
        AssertionError: not accepted within ``within`` seconds (the last outcome in the
            text), or a violation on the way (``strict``).
    """
    started = time.monotonic() if started is None else started

    async def outcome() -> str:
        found, violation = await check()
        assert violation is None or not strict, violation
        return found

    await async_wait_for(outcome, timeout=within, until=accept, message=what)
    return time.monotonic() - started


def server_error(sample: Sample) -> bool:
    """A 500, or a 5xx without its fault's clear page: what a broker must never get."""
    return sample.outcome.startswith("status:5") or sample.outcome == "ws-handshake:500"


def by_outcome(samples: Iterable[Sample]) -> dict[str, int]:
    """``{"kind:outcome": count}``, sorted: how a figure file lists what the clients got."""
    return dict(sorted(Counter(f"{s.kind}:{s.outcome}" for s in samples).items()))


def granted_beyond_level(samples: Iterable[Sample]) -> int:
    """Answers that reached the portal with more than the client's session has (or
    another broker's identity, or for a client that must be refused): the figure that
    must be 0 in every fault."""
    return sum(1 for s in samples if s.violation)
