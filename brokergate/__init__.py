"""The ``brokergate`` command line and configuration loading (the edge of the system)."""

from brokergate._config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "load_config"]
