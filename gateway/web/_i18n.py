"""Translations of the gateway's pages: JSON catalogs, German by default, then English and Dutch.

Catalogs live in ``gateway/web/locales/<lang>/*.json``; every file of a language is loaded and
merged (``gateway.json`` is the core's, ``logins.json`` the logins pages'), so a new
area adds a file instead of editing a shared one. Keys are flat strings
(``"certificate.expired.title"``); values may use ``{name}`` placeholders.

The language of a page: the first supported language of ``Accept-Language`` (by q-value),
else the user's stored locale, else German (the portal's home market, seeds/).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "Catalogs", "load_catalogs", "negotiate_language"]

LANGUAGES = ("de", "en", "nl")
DEFAULT_LANGUAGE = "de"
LOCALES_DIR = Path(__file__).parent / "locales"


class CatalogError(ValueError):
    def __init__(self, problem: str) -> None:
        super().__init__(f"translation catalogs: {problem}")


@dataclass(frozen=True, kw_only=True)
class Catalogs:
    """Every language's merged messages. Immutable once loaded."""

    messages: Mapping[str, Mapping[str, str]] = field(repr=False)

    def translate(self, language: str, key: str, /, **params: object) -> str:
        """The message for ``key`` in ``language`` (falling back to German, then the key)."""
        text = self.messages.get(language, {}).get(key)
        if text is None:
            text = self.messages.get(DEFAULT_LANGUAGE, {}).get(key, key)
        return text.format(**params) if params else text

    def keys(self, language: str) -> set[str]:
        return set(self.messages.get(language, {}))


def load_catalogs(directory: Path = LOCALES_DIR) -> Catalogs:
    """Load ``<directory>/<lang>/*.json`` for every supported language.

    Raises:
        CatalogError: a file is not a JSON object of strings, or a key is defined twice.
    """
    messages: dict[str, dict[str, str]] = {}
    for language in LANGUAGES:
        merged: dict[str, str] = {}
        for path in sorted((directory / language).glob("*.json")):
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in data.items()
            ):
                raise CatalogError(f"{path} must be one JSON object of string to string")
            duplicate = merged.keys() & data.keys()
            if duplicate:
                raise CatalogError(f"{path} redefines {sorted(duplicate)[:3]}")
            merged.update(data)
        messages[language] = merged
    return Catalogs(messages=messages)


def _accepted(header: str) -> list[str]:
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            weighted.append((-quality, index, tag.strip().lower()))
    return [tag for _, _, tag in sorted(weighted)]


def negotiate_language(accept_language: str | None, user_locale: str | None = None) -> str:
    """The page language: Accept-Language first, then the user's locale, then German."""
    for tag in _accepted(accept_language or ""):
        primary = tag.split("-", 1)[0]
        if primary in LANGUAGES:
            return primary
    if user_locale and user_locale.split("-", 1)[0].lower() in LANGUAGES:
        return user_locale.split("-", 1)[0].lower()
    return DEFAULT_LANGUAGE
