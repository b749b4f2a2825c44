"""Catalogs: every key in every language; negotiation; templates render in all languages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway import LANGUAGES, load_catalogs, negotiate_language
from gateway.web._i18n import LOCALES_DIR, CatalogError

TEMPLATES = Path(__file__).resolve().parents[2] / "gateway" / "templates"


def test_every_key_exists_in_every_language() -> None:
    catalogs = load_catalogs()
    reference = catalogs.keys("de")
    assert reference, "the German catalog is empty"
    for language in LANGUAGES:
        assert catalogs.keys(language) == reference, (
            f"{language}: {catalogs.keys(language) ^ reference}"
        )


def test_every_catalog_file_exists_in_every_language() -> None:
    names = {lang: {p.name for p in (LOCALES_DIR / lang).glob("*.json")} for lang in LANGUAGES}
    assert names["de"] == names["en"] == names["nl"]


def test_placeholders_match_across_languages() -> None:
    catalogs = load_catalogs()
    for key in catalogs.keys("de"):
        fields = {
            lang: set(re.findall(r"\{(\w+)\}", catalogs.messages[lang][key])) for lang in LANGUAGES
        }
        assert fields["de"] == fields["en"] == fields["nl"], key


def test_template_keys_exist() -> None:
    catalogs = load_catalogs()
    keys = catalogs.keys("de")
    for template in TEMPLATES.glob("*.html"):
        for key in re.findall(r't\("([a-z0-9_.]+[a-z0-9_])"[,)]', template.read_text()):
            assert key in keys, f"{template.name}: {key}"


@pytest.mark.parametrize(
    ("header", "locale", "expected"),
    [
        (None, None, "de"),
        ("en-GB,en;q=0.9", None, "en"),
        ("fr-FR, nl;q=0.8, en;q=0.5", None, "nl"),
        ("en;q=0.2, nl;q=0.9", None, "nl"),
        ("fr", "nl", "nl"),
        ("fr", None, "de"),
        ("", "en-US", "en"),
        ("en;q=0", "nl", "nl"),
        ("garbage;;q=x", None, "de"),
    ],
)
def test_negotiation(header: str | None, locale: str | None, expected: str) -> None:
    assert negotiate_language(header, locale) == expected


def test_broken_catalog_is_refused(tmp_path: Path) -> None:
    for lang in LANGUAGES:
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "a.json").write_text(json.dumps({"x": "y"}))
    (tmp_path / "de" / "b.json").write_text(json.dumps({"x": "again"}))
    with pytest.raises(CatalogError, match="redefines"):
        load_catalogs(tmp_path)
    (tmp_path / "de" / "b.json").write_text(json.dumps({"z": 1}))
    with pytest.raises(CatalogError, match="string to string"):
        load_catalogs(tmp_path)


def test_translate_falls_back_to_german_then_key(tmp_path: Path) -> None:
    catalogs = load_catalogs()
    assert catalogs.translate("en", "login.title") == "Sign in"
    assert catalogs.translate("xx", "login.title") == "Anmelden"
    assert catalogs.translate("en", "no.such.key") == "no.such.key"


def test_composed_keys_exist() -> None:
    """Keys built at run time: every problem kind, error page and level has its texts."""
    from gateway import ProblemKind, _errors
    from store import Level

    keys = load_catalogs().keys("de")
    for kind in ProblemKind:
        for part in ("title", "body", "action"):
            assert f"certificate.{kind.value}.{part}" in keys
    pages = {"error", "not_found"} | {
        cls.page
        for cls in vars(_errors).values()
        if isinstance(cls, type) and issubclass(cls, _errors.GatewayError)
    }
    for page in pages:
        assert f"error.{page}.title" in keys and f"error.{page}.body" in keys
    for level in Level:
        assert f"level.{level.value}" in keys
