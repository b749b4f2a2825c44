"""The domain errors the CLI turns into a message and exit code 1.

Each package keeps its own error tree; add its base class here when it grows one.
"""

from __future__ import annotations

from ca import CAError
from gateway.logins import LoginError
from renewal import RenewalError
from store import StoreError

DOMAIN_ERRORS: tuple[type[Exception], ...] = (CAError, LoginError, RenewalError, StoreError)
