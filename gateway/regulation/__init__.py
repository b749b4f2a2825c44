"""Regulation: every throttle and lock of the gateway, in one place.

* ``_limits``: the table of the limits (defaults, reasons; filled from ``[logins]``) —
  the one file that answers "how many TANs may a broker request".
* ``_throttles``: the decisions over it — account and address lockouts, TAN mails,
  wrong TAN entries, certificate downloads — and the keys counters are kept under.
* ``_counters``: fixed-window counters with lockouts in ``store.RateLimit``, shared by
  every replica.

Callers are the login services (``gateway.logins``); nothing here knows HTTP.
"""

from gateway.regulation._counters import RatePolicy, purge_expired
from gateway.regulation._limits import Limits

__all__ = ["Limits", "RatePolicy", "purge_expired"]
