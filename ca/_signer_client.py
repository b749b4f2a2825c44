"""The gateway's side of the signer: ask over the Unix socket, retry with the same request id.

A retry can never issue twice: the signer stores its answer under the request id and
replays it. So a signer restart between the gateway's request and the signer's answer
loses nothing: the retry reaches the new signer and gets the stored answer, or, if the old
one rolled back, a fresh issuance.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ca._errors import SignerUnavailable
from ca._signer import IssueRequest, SignerAnswer

# Attempts over about a second: long enough for systemd to restart a signer, short enough
# that a broker waiting for a download is told "try again later" promptly.
RETRY_DELAYS = (0.0, 0.25, 0.75)


@dataclass(kw_only=True)
class SignerClient:
    """Talks to one signer. Owns an aiohttp session, opened on first use; ``close()`` it."""

    socket_path: Path
    timeout: float = 30.0
    retry_delays: tuple[float, ...] = RETRY_DELAYS
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.socket_path)),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def issue(self, request: IssueRequest) -> SignerAnswer:
        """The signer's answer to ``request``.

        Raises:
            SignerUnavailable: no answer after every retry (nothing was issued, or an
                issuance the next retry with this request id will replay).
        """
        last = "no attempt"
        body = {
            "request_id": request.request_id,
            "user_id": request.user_id,
            "session_id": request.session_id,
            "client_addr": request.client_addr,
        }
        for delay in self.retry_delays:
            if delay:
                await asyncio.sleep(delay)
            try:
                async with self._client().post("http://signer/v1/issue", json=body) as resp:
                    if resp.status == 200:
                        return SignerAnswer.from_json(await resp.json())
                    if resp.status == 400:
                        raise ValueError(
                            f"the signer refused the request as malformed: "
                            f"{(await resp.text())[:200]}"
                        )
                    last = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError, KeyError) as exc:
                last = type(exc).__name__
        raise SignerUnavailable(last)

    async def healthy(self) -> bool:
        try:
            async with self._client().get("http://signer/v1/health") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
