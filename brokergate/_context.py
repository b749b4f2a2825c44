"""What every CLI command gets: the validated config, a lazily opened store, the clock, output."""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import TextIO

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from brokergate._config import Config
from store import Clock, Sealer, make_engine, session_factory, system_clock


@dataclass(kw_only=True)
class CliContext:
    """Owns the engine it opens; :meth:`close` disposes of it."""

    config: Config
    clock: Clock = system_clock
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    actor: str = field(default_factory=lambda: f"ops:{os.environ.get('USER') or getpass.getuser()}")

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.config.store.url, echo=self.config.store.echo_sql)

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
