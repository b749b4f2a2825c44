"""The pages' texts: every key used by our templates exists in German, English and Dutch,
and the seed's wording is kept where brokers expect it (seed 001, seed 000)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway import load_catalogs

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "gateway" / "templates" / "logins"
KEY = re.compile(r"""t\(\s*["']((?:logins|error|banner)\.[a-z0-9_.\-]+)["']""")


def used_keys() -> set[str]:
    keys: set[str] = set()
    for path in TEMPLATES.glob("*.html"):
        keys |= set(KEY.findall(path.read_text(encoding="utf-8")))
    # Prefixes completed at render time ("logins.method." ~ method) are checked below.
    return {k for k in keys if not k.endswith((".", "_"))}


@pytest.mark.parametrize("language", ["de", "en", "nl"])
def test_every_key_is_translated(language: str) -> None:
    catalogs = load_catalogs()
    known = catalogs.keys(language)
    used = used_keys()
    assert len(used) > 80
    assert not sorted(used - known)
    for method in (
        "certificate",
        "password",
        "totp",
        "recovery-code",
        "passkey",
        "email-tan",
        "device",
        "broker-number",
    ):
        assert f"logins.method.{method}" in known
    for notice in (
        "revoked",
        "totp_reset",
        "passkey_added",
        "passkey_removed",
        "devices_forgotten",
        "password_changed",
        "totp_active",
    ):
        assert f"logins.account.done.{notice}" in known
    assert {"logins.reauth.intro_basic", "logins.reauth.intro_strong"} <= known
    ours = json.loads((ROOT / "gateway/web/locales" / language / "logins.json").read_text("utf-8"))
    german = json.loads((ROOT / "gateway/web/locales/de/logins.json").read_text("utf-8"))
    assert set(ours) == set(german)
    for key, text in ours.items():  # same placeholders in every language
        assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", german[key])), (
            key
        )


def test_seed_wording() -> None:
    catalogs = load_catalogs()
    assert (
        catalogs.translate("de", "error.invalid_broker_number")
        == "Diese Vermittlernummer ist ungültig."
    )
    assert (
        catalogs.translate("en", "error.invalid_broker_number") == "This broker number is invalid."
    )
    assert catalogs.translate("de", "logins.unknown_email.title") == "Unbekannte E-Mail-Adresse"
    assert "wenden Sie sich an Ihren Maklerbetreuer" in catalogs.translate(
        "de", "logins.unknown_email.contact"
    )
    assert (
        "please contact your broker support"
        in catalogs.translate("en", "logins.unknown_email.body").lower()
    )
    assert catalogs.translate("de", "logins.twofa.not_now") == "Nicht jetzt"
    assert catalogs.translate("de", "logins.twofa.snooze") == "Vorerst nicht mehr anzeigen"
    assert catalogs.translate("de", "logins.account.download") == "Zertifikat herunterladen"
    assert catalogs.translate("nl", "logins.second.code_label") == "6-cijferige code"
    with pytest.raises(KeyError):  # a missing placeholder value is a programming error
        catalogs.translate("de", "logins.tan.body", email="a@example.org")


def test_every_login_method_maps_to_one_of_the_five_header_values() -> None:
    """The history keeps finer names (recovery code, remembered browser, restricted); the
    upstream's X-Brokergate-Method and the login metric know exactly five."""
    from gateway._metrics import LOGIN_METHODS
    from gateway.logins import _history

    names = {
        value
        for name, value in vars(_history).items()
        if name.startswith("METHOD_") and isinstance(value, str)
    }
    assert {"broker-number", "device", "recovery-code"} <= names
    assert {_history.session_method(name) for name in names} == set(LOGIN_METHODS)
    assert _history.session_method(_history.METHOD_RESTRICTED) == "email-tan"
