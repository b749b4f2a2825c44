"""What every CLI command gets: the validated config, a lazily opened store, the clock, output."""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from brokergate._config import BUILT_IN, CONFIG_ENV, Config
from store import Clock, Sealer, ensure_current, make_engine, session_factory, system_clock

# What `make run` (brokergate dev run) writes, relative to the project folder: named in the
# hints below, since it is the configuration a newcomer's CLI most often lacks.
DEV_CONFIG = Path("data") / "brokergate-dev.toml"


@dataclass(kw_only=True)
class CliContext:
    """Owns the engine it opens; :meth:`close` disposes of it.

    Args:
        create_store: the command was told to create the database (``db upgrade``): only
            then may a missing SQLite file be created. Every other command stops with
            :class:`StoreUnusable` instead of creating an empty database.
        schema_any: the command works on any schema revision (``db status``); all others
            need the current one and stop with ``SchemaOutOfDate`` otherwise.
    """

    config: Config
    clock: Clock = system_clock
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    actor: str = field(default_factory=lambda: f"ops:{os.environ.get('USER') or getpass.getuser()}")
    create_store: bool = False
    schema_any: bool = False

    @property
    def store_url_for_messages(self) -> str:
        try:
            return make_url(self.config.store.url).render_as_string(hide_password=True)
        except ArgumentError:
            return repr(self.config.store.url)

    @cached_property
    def engine(self) -> Engine:
        url = self._parsed_url()
        database = url.database if url.get_backend_name() == "sqlite" else None
        if database and database != ":memory:" and not self.create_store:
            if not Path(database).is_file():
                raise StoreUnusable(
                    f"the database {database} does not exist (store.url from "
                    f"{self.config.source}); point the CLI at your configuration with "
                    f"--config FILE or 'export {CONFIG_ENV}=FILE'{_dev_config_hint()}, or "
                    "create a new database with 'brokergate db upgrade'"
                )
        try:
            engine = make_engine(self.config.store.url, echo=self.config.store.echo_sql)
        except NoSuchModuleError as exc:
            raise StoreUnusable(
                f"store.url {self.store_url_for_messages} (from {self.config.source}) names a "
                f"database driver that is not installed or does not exist: {exc}"
            ) from exc
        if not (self.create_store or self.schema_any):
            try:
                ensure_current(engine)  # a clear "run db upgrade" instead of a SQL error
            except BaseException:
                engine.dispose()
                raise
        return engine

    def _parsed_url(self) -> URL:
        try:
            return make_url(self.config.store.url)
        except ArgumentError:
            raise StoreUnusable(
                f"store.url {self.config.store.url!r} (from {self.config.source}) is not a "
                "database URL; write e.g. sqlite:///data/brokergate.db or "
                "postgresql+psycopg://user@host/db"
            ) from None

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.engine)

    def sealer(self, purpose: str) -> Sealer:
        """A sealer for ``purpose``; raises a clear error when no secret key is configured."""
        if not self.config.store.secret_key:
            raise MissingSecret(
                "store.secret_key",
                "BROKERGATE_STORE__SECRET_KEY (or store.secret_key_file in the config file)",
            )
        return Sealer(secret=self.config.store.secret_key, purpose=purpose)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


class MissingSecret(RuntimeError):
    """A command needs a secret that is not configured."""

    def __init__(self, key: str, how: str) -> None:
        self.key = key
        super().__init__(f"{key} is not set; provide it through {how}")


class StoreUnusable(RuntimeError):
    """The configured database cannot be used as it is (missing file, bad URL); exit 2."""


def _dev_config_hint() -> str:
    if DEV_CONFIG.is_file():
        return f" (for the `make run` system: 'export {CONFIG_ENV}={DEV_CONFIG}')"
    return ""


def secret_hint(config: Config) -> str:
    """What to add to a missing-secret message when no configuration file was read."""
    if config.source != BUILT_IN:
        return ""
    hint = f"; no configuration file was read (--config FILE, ${CONFIG_ENV} or ./brokergate.toml)"
    if DEV_CONFIG.is_file():
        hint += f"; for the `make run` system: export {CONFIG_ENV}={DEV_CONFIG}"
    return hint
