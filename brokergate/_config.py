"""Configuration: one TOML file plus ``BROKERGATE_*`` environment overrides, read once at the edge.

Each package owns a frozen settings dataclass (``store.StoreSettings``,
``ca.CASettings`` …). This module maps TOML sections onto them, converts and
validates every value, and hands the finished, immutable :class:`Config` down.

Precedence, lowest first: the dataclass default, the TOML file, the
environment (``BROKERGATE_<SECTION>__<KEY>``, e.g. ``BROKERGATE_GATEWAY__PORT``).

Secrets (fields with ``metadata={"secret": True}``) are never read from the
TOML file itself, and never from a command line: they come from the
environment (``BROKERGATE_CA__PASSPHRASE``) or from a file whose path is given
as ``<key>_file`` in TOML or ``BROKERGATE_<SECTION>__<KEY>_FILE``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from ca import CASettings, FirmSettings, SignerSettings
from gateway import GatewaySettings, check_route_rights
from gateway.logins import LoginSettings
from renewal import MailSettings, RenewalSettings
from store import StoreSettings

ENV_PREFIX = "BROKERGATE_"
CONFIG_ENV = "BROKERGATE_CONFIG"
BUILT_IN = "built-in defaults"  # Config.source when no file was read


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything brokergate reads from outside, validated."""

    store: StoreSettings = field(default_factory=StoreSettings)
    ca: CASettings = field(default_factory=CASettings)
    firms: FirmSettings = field(default_factory=FirmSettings)
    signer: SignerSettings = field(default_factory=SignerSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    logins: LoginSettings = field(default_factory=LoginSettings)
    renewal: RenewalSettings = field(default_factory=RenewalSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    source: str = BUILT_IN  # the file's path, or BUILT_IN


SECTIONS: dict[str, type[Any]] = {
    "store": StoreSettings,
    "ca": CASettings,
    "firms": FirmSettings,
    "signer": SignerSettings,
    "gateway": GatewaySettings,
    "logins": LoginSettings,
    "renewal": RenewalSettings,
    "mail": MailSettings,
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names key and source."""

    def __init__(self, key: str, source: str, problem: str) -> None:
        self.key = key
        self.source = source
        super().__init__(f"configuration error in {source}: {key}: {problem}")


_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``"15m"`` → 15 minutes; units s, m, h, d, w."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 12h, 730d or 2w")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if tp is timedelta:
        return "duration (e.g. 15m, 12h, 730d)"
    if tp is type(None):
        return "none"
    if dataclasses.is_dataclass(tp):
        return "table"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, *, from_env: bool) -> Any:
    """Convert a TOML value (or environment string) to ``tp``; ValueError if it does not fit."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None or (from_env and value == "" and type(None) in args):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, from_env=from_env)
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{value!r} is not {_type_name(tp)}")
        return value
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if from_env and isinstance(value, str):
            value = (
                json.loads(value)
                if value.strip().startswith("[")
                else [v.strip() for v in value.split(",") if v.strip()]
            )
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {value!r}")
        return tuple(_convert(item, v, from_env=from_env) for v in value)
    if origin is dict:
        if from_env and isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        return _build(tp, value, source="", prefix="", from_env=from_env)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_env and isinstance(value, str) and value.lower() in {"1", "true", "yes", "on"}:
            return True
        if from_env and isinstance(value, str) and value.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"expected a whole number, got {value!r}")
        if isinstance(value, int):
            return value
        if from_env and isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise ValueError(f"expected a whole number, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_env and isinstance(value, str):
            return float(value)
        raise ValueError(f"expected a number, got {value!r}")
    if tp is timedelta:
        if isinstance(value, str):
            return parse_duration(value)
        raise ValueError(f"expected a duration like 15m or 730d, got {value!r}")
    if tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise ValueError(f"expected a path, got {value!r}")
    if tp is bytes:
        if isinstance(value, str):
            return value.encode()
        raise ValueError(f"expected text, got {value!r}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ValueError(f"{value!r} is not {_type_name(tp)}") from None
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"expected text, got {value!r}")
    raise TypeError(f"unsupported setting type {tp!r}")  # a programming error in a settings class


def _read_secret_file(path: str) -> bytes:
    data = Path(path).expanduser().read_bytes()
    return data.rstrip(b"\r\n")


def _build(
    cls: type[Any],
    table: Mapping[str, Any],
    *,
    source: str,
    prefix: str,
    from_env: bool,
    env: Mapping[str, str] | None = None,
) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        name = key.removesuffix("_file") if key.endswith("_file") else key
        f = fields.get(name)
        if f is None:
            raise ConfigError(f"{prefix}{key}", source, "unknown key; see docs/configuration.md")
        if f.metadata.get("secret"):
            if key == name:
                raise ConfigError(
                    f"{prefix}{key}",
                    source,
                    f"secrets are not written in the file: set {prefix}{key}_file = PATH or the "
                    f"environment variable {ENV_PREFIX}{prefix.replace('.', '__').upper()}"
                    f"{key.upper()}",
                )
            try:
                value = _read_secret_file(str(value))
            except OSError as exc:
                raise ConfigError(
                    f"{prefix}{key}", source, f"cannot read {value}: {exc.strerror}"
                ) from None
            kwargs[name] = value if hints[name] is bytes else value.decode()
            continue
        if key != name:
            raise ConfigError(f"{prefix}{key}", source, "unknown key; see docs/configuration.md")
        try:
            kwargs[name] = _convert(hints[name], value, from_env=from_env)
        except ConfigError:
            raise
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"{prefix}{key}", source, f"{exc} (expected {_type_name(hints[name])})"
            ) from None
    if env is not None:
        section_env = ENV_PREFIX + prefix.rstrip(".").upper() + "__"
        for var, raw in env.items():
            if not var.startswith(section_env):
                continue
            key = var[len(section_env) :].lower()
            name = key.removesuffix("_file")
            f = fields.get(name)
            if f is None or (key != name and not f.metadata.get("secret")):
                raise ConfigError(var, "the environment", "unknown setting")
            try:
                if f.metadata.get("secret"):
                    secret = _read_secret_file(raw) if key != name else raw.encode()
                    kwargs[name] = secret if hints[name] is bytes else secret.decode()
                else:
                    kwargs[name] = _convert(hints[name], raw, from_env=True)
            except OSError as exc:
                raise ConfigError(
                    var, "the environment", f"cannot read {raw}: {exc.strerror}"
                ) from None
            except (ValueError, TypeError, json.JSONDecodeError) as exc:
                raise ConfigError(
                    var, "the environment", f"{exc} (expected {_type_name(hints[name])})"
                ) from None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(prefix.rstrip(".") or cls.__name__, source, str(exc)) from None


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file (if any) and the environment into a validated :class:`Config`.

    Args:
        path: the TOML file; ``None`` means ``$BROKERGATE_CONFIG``, then
            ``./brokergate.toml`` if it exists, else built-in defaults only.
        env: the environment (``os.environ`` if ``None``).

    Raises:
        ConfigError: naming the key and the file (or the environment).
    """
    env = dict(os.environ if env is None else env)
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    if path is None and Path("brokergate.toml").is_file():
        path = Path("brokergate.toml")
    data: dict[str, Any] = {}
    source = BUILT_IN
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("(file)", source, "the configuration file does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("(file)", source, f"not valid TOML: {exc}") from None
    for section in data:
        if section not in SECTIONS:
            raise ConfigError(
                section, source, f"unknown section; known: {', '.join(sorted(SECTIONS))}"
            )
        if not isinstance(data[section], dict):
            raise ConfigError(section, source, "expected a [section] table")
    known_env = {ENV_PREFIX + s.upper() + "__" for s in SECTIONS}
    for var in env:
        if var.startswith(ENV_PREFIX) and "__" in var and var != CONFIG_ENV:
            if not any(var.startswith(p) for p in known_env):
                raise ConfigError(var, "the environment", "unknown section")
    built = {
        name: _build(
            cls, data.get(name, {}), source=source, prefix=f"{name}.", from_env=False, env=env
        )
        for name, cls in SECTIONS.items()
    }
    try:
        # Issue 13: a route's right must be a product of the catalogue ([firms]).
        check_route_rights(built["gateway"].routes, built["firms"])
    except ValueError as exc:
        raise ConfigError("gateway.routes", source, str(exc)) from None
    return Config(source=source, **built)


@dataclass(frozen=True, kw_only=True)
class ReferenceEntry:
    """One row of the configuration reference (docs/configuration.md is generated from these)."""

    key: str
    type_name: str
    default: str
    help: str
    secret: bool
    env: str


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.metadata.get("secret"):
        return "(none)"
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
        return f"{len(value)} entries (see below)"
    if isinstance(value, Path):
        return str(value)
    return json.dumps(value, default=str) if not isinstance(value, str) else value


def configuration_reference() -> Iterator[ReferenceEntry]:
    """Every configuration key, in section order, with type, default and help."""
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            env = f"{ENV_PREFIX}{section.upper()}__{f.name.upper()}"
            yield ReferenceEntry(
                key=f"{section}.{f.name}",
                type_name=_type_name(hints[f.name]),
                default=_default_text(f),
                help=str(f.metadata.get("help", "")),
                secret=bool(f.metadata.get("secret")),
                env=env,
            )
