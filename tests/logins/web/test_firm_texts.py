"""The head users' pages compose message keys (notices, roles, statuses, field errors):
every key they can compose exists in de, en and nl (issue 13)."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.web import _firm_offices, _firm_users
from gateway.web._i18n import LANGUAGES, load_catalogs
from store import UserRole

WEB = Path(_firm_users.__file__).parent


def test_every_composed_firm_key_exists_in_every_language() -> None:
    catalogs = load_catalogs()
    composed = {f"firm.users.done.{n}" for n in _firm_users._NOTICES}
    composed |= {f"firm.offices.done.{n}" for n in _firm_offices._NOTICES}
    composed |= {f"firm.role.{r.value}" for r in UserRole}
    composed |= {f"firm.status.{s}" for s in ("active", "inactive", "pending")}
    composed |= {f"firm.certificate.{s}" for s in ("valid", "expired", "revoked", "none")}
    # the error keys the handlers put next to a field
    for module in ("_firm_users.py", "_firm_offices.py"):
        source = (WEB / module).read_text(encoding="utf-8")
        composed |= set(re.findall(r'"(firm\.error\.[a-z_.]+)"', source))
        composed |= {f"firm.error.office.{name}_empty" for name in _firm_offices.REQUIRED}
    assert len(composed) > 30
    for language in LANGUAGES:
        missing = sorted(composed - catalogs.keys(language))
        assert missing == [], (language, missing)
