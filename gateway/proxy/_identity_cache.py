"""The upstream's identity headers per identity, built once per reused assertion (issue 11).

Per request, the headers were rebuilt from scratch: renewal facts (two calendar dates in
the brokers' zone), the signer's cache key, the header dict. All of it is a pure function
of the identity and of facts that change only at known instants, so one entry serves an
identity's requests until the first of:

* the end of the assertion's reuse window (``AssertionSigner.sign_reusable``): the
  upstream never sees an assertion older than without this cache;
* the next change of the renewal facts (``renewal_facts_until``): the next local midnight
  (``days_left``), the start of the reminder window and the certificate's expiry
  (``renewal_url``).

Any other change of who is there (level, method, user data, certificate, office or
rights) is a different ``Identity`` and therefore a different entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web

from gateway.auth._certificate_identity import Identity
from gateway.proxy._assertion import AssertionSigner
from gateway.proxy._identity_headers import identity_headers, renewal_facts

__all__ = ["IDENTITY_HEADERS", "IdentityHeaderCache", "renewal_facts_until"]

_ENTRY_LIMIT = 10_000  # identities kept at once; cleared when full (bounded memory)


def renewal_facts_until(
    not_after: datetime | None, now: datetime, *, zone: ZoneInfo, window_days: int
) -> datetime | None:
    """The first instant after ``now`` at which ``renewal_facts`` may answer differently
    (None: never, no certificate presented)."""
    if not_after is None:
        return None
    local = now.astimezone(zone)
    # The next local midnight (an aware instant: compared with ``now`` in UTC).
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)
    changes = [midnight]
    due_from = not_after - timedelta(days=window_days)
    changes += [moment for moment in (due_from, not_after) if moment > now]
    return min(changes)


@dataclass(frozen=True, kw_only=True)
class _Entry:
    since: datetime
    until: datetime
    headers: dict[str, str]


class IdentityHeaderCache:
    """``headers(identity, now)``: what ``identity_headers`` gives for ``identity`` with its
    renewal facts and signed assertion at ``now``; owned by the app (``IDENTITY_HEADERS``).

    Args:
        signer: the app's assertion signer.
        zone: the brokers' time zone (calendar days left).
        account_url: where a broker renews (``renewal_url``).
        window_days: the reminder window (``store.REMINDER_WINDOW_DAYS``).
    """

    def __init__(
        self, *, signer: AssertionSigner, zone: ZoneInfo, account_url: str, window_days: int
    ) -> None:
        self._signer = signer
        self._zone = zone
        self._account_url = account_url
        self._window_days = window_days
        self._entries: dict[Identity, _Entry] = {}

    def headers(self, identity: Identity, now: datetime) -> dict[str, str]:
        """A fresh dict of the headers (the caller may change it)."""
        headers, _until = self.headers_until(identity, now)
        return headers

    def headers_until(self, identity: Identity, now: datetime) -> tuple[dict[str, str], datetime]:
        """A fresh dict of the headers, and the instant until which they stay what
        :meth:`headers` gives (the per-connection decision memo reuses them until then)."""
        entry = self._entries.get(identity)
        if entry is not None and entry.since <= now < entry.until:
            return dict(entry.headers), entry.until
        renewal = renewal_facts(
            identity,
            now=now,
            zone=self._zone,
            account_url=self._account_url,
            window_days=self._window_days,
        )
        token, reused_until = self._signer.sign_reusable(identity, now, renewal)
        headers = identity_headers(identity, token, renewal)
        facts_until = renewal_facts_until(
            identity.cert_not_after, now, zone=self._zone, window_days=self._window_days
        )
        until = reused_until if facts_until is None else min(reused_until, facts_until)
        if len(self._entries) >= _ENTRY_LIMIT:
            self._entries.clear()
        self._entries[identity] = _Entry(since=now, until=until, headers=headers)
        return dict(headers), until


IDENTITY_HEADERS = web.AppKey("identity_headers", IdentityHeaderCache)
"""The app's identity-header cache (opened with the signer in ``gateway._app``)."""
