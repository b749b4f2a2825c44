"""The developer's own settings for ``dev run``: an overlay merged into the generated config.

``dev run`` writes ``data/brokergate-dev.toml`` on every start (paths, ports and secrets
files are its business). Settings a developer wants to try (routes, levels, timeouts,
mail sender …) go into an overlay file (``dev-overlay.toml`` in the project folder, or
``--overlay FILE``), which is read on every start, merged over the generated values and
never written. The keys ``dev run`` needs to control are refused, naming the flag that
sets them instead.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from brokergate._config import SECTIONS, ConfigError

# Keys the dev system depends on, and what to use instead of setting them in an overlay.
OWNED_KEYS: Mapping[str, str] = {
    "store.url": "dev run keeps its store in data/brokergate.db",
    "store.secret_key_file": "dev run keeps its secret in data/secret-key",
    "ca.passphrase_file": "dev run keeps the CA passphrase in data/ca-passphrase",
    "gateway.host": "dev run binds loopback only",
    "gateway.port": "use --gateway-port",
    "gateway.server_cert": "dev run makes certs-dev/server.pem",
    "gateway.server_key": "dev run makes certs-dev/server-key.pem",
    "gateway.upstream_url": "use --upstream-port (the demo upstream)",
    "gateway.public_url": "use --gateway-port",
    "gateway.metrics_port": "use --metrics-port",
    "mail.smtp_host": "dev run delivers to its mail sink",
    "mail.smtp_port": "use --smtp-port",
    "mail.tls": "the mail sink speaks plain SMTP",
}


def read_overlay(path: Path) -> dict[str, dict[str, Any]]:
    """The overlay's sections, checked: TOML, known sections, no key ``dev run`` owns.

    Raises:
        ConfigError: naming the overlay file and the key (the values themselves are
            checked with the merged configuration, see :func:`overlay_error`).
    """
    source = f"{path} (the dev run overlay)"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("(file)", source, "the overlay file does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("(file)", source, f"not valid TOML: {exc}") from None
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                section, source, f"unknown section; known: {', '.join(sorted(SECTIONS))}"
            )
        if not isinstance(table, dict):
            raise ConfigError(section, source, "expected a [section] table")
        for key in table:
            why = OWNED_KEYS.get(f"{section}.{key}")
            if why is not None:
                raise ConfigError(
                    f"{section}.{key}", source, f"set by dev run ({why}); remove it here"
                )
    return data


def merge_sections(
    generated: Mapping[str, Mapping[str, Any]], overlay: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``generated`` with each overlay section's keys laid over it (the overlay wins)."""
    merged = {section: dict(values) for section, values in generated.items()}
    for section, values in overlay.items():
        merged.setdefault(section, {}).update(values)
    return merged


def toml_value(value: Any) -> str:
    """A TOML literal for a value as tomllib returns it.

    Hand-written (a dozen lines) rather than a new dependency: the values come from
    tomllib itself, so only its few types occur; inline tables keep each key on one line.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)  # JSON strings and numbers are valid TOML literals
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"not a TOML value: {value!r}")  # tomllib gives nothing else


def overlay_error(exc: ConfigError, overlay: Path, generated: Path) -> ConfigError:
    """The loader's error about the merged file, re-addressed to the overlay when the key
    came from it (the developer edits the overlay, not the generated file)."""
    problem = str(exc).split(f"{exc.key}: ", 1)[-1]
    return ConfigError(
        exc.key, f"{overlay} (the dev run overlay, merged into {generated})", problem
    )
