"""The product catalogue that office and user rights are drawn from (config section ``[firms]``).

Seed 003 shows rights per product as check marks ("DIP", "DIL", "ORV"); the keys are what
the portal is told (identity headers, signed assertion) and what a route may require.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PRODUCT_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,15}$")


@dataclass(frozen=True, kw_only=True)
class Product:
    """One product of the catalogue: a key and its name in each page language."""

    key: str = field(metadata={"help": "Right key: capitals, digits, _; at most 16 (e.g. ORV)"})
    de: str = field(metadata={"help": "Name shown on German pages"})
    en: str = field(metadata={"help": "Name shown on English pages"})
    nl: str = field(metadata={"help": "Name shown on Dutch pages"})

    def __post_init__(self) -> None:
        if not PRODUCT_KEY.fullmatch(self.key):
            raise ValueError(
                f"product key {self.key!r}: use 1 to 16 capitals, digits or _, "
                "starting with a capital (e.g. ORV)"
            )
        for language in ("de", "en", "nl"):
            if not getattr(self, language).strip():
                raise ValueError(f"product {self.key}: the {language} name must not be empty")

    def name(self, language: str) -> str:
        """The product's name in ``language`` (de, en or nl; anything else: English)."""
        return str(getattr(self, language if language in ("de", "en", "nl") else "en"))


DEFAULT_PRODUCTS = (
    Product(
        key="DIP",
        de="Direkt beginnende Rente (Zeker/Keuze Pensioen)",
        en="Immediate pension (Zeker/Keuze Pensioen)",
        nl="Direct ingaand pensioen (Zeker/Keuze Pensioen)",
    ),
    Product(
        key="DIL",
        de="Direkt beginnende Leibrente",
        en="Immediate annuity",
        nl="Direct ingaande lijfrente",
    ),
    Product(
        key="ORV",
        de="Risikolebensversicherung",
        en="Term life insurance",
        nl="Overlijdensrisicoverzekering",
    ),
)


@dataclass(frozen=True, kw_only=True)
class FirmSettings:
    products: tuple[Product, ...] = field(
        default=DEFAULT_PRODUCTS,
        metadata={
            "help": "Product catalogue: [[firms.products]] tables with key, de, en, nl. "
            "Office and user rights are keys of it; a route may require one "
            "(gateway.routes right = ...)"
        },
    )

    def __post_init__(self) -> None:
        if not self.products:
            raise ValueError("the product catalogue is empty: name at least one product")
        keys = [p.key for p in self.products]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"product keys named twice: {', '.join(duplicates)}")

    def keys(self) -> tuple[str, ...]:
        """The catalogue's keys in the configured order."""
        return tuple(p.key for p in self.products)

    def product(self, key: str) -> Product:
        """The product ``key`` names; raises ``KeyError`` for a key not in the catalogue."""
        for p in self.products:
            if p.key == key:
                return p
        raise KeyError(key)
