"""Configuration loading: TOML + environment, validation with messages naming key and file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from brokergate._cli_config import render_reference
from brokergate._config import ConfigError, load_config, parse_duration
from tests.conftest import REPO, CliRunner


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "brokergate.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_file() -> None:
    config = load_config(None, env={})
    assert config.ca.leaf_validity_years == 2
    assert config.store.url.startswith("sqlite:///")


def test_file_then_environment_wins(tmp_path: Path) -> None:
    path = write(tmp_path, '[gateway]\nport = 9443\n[ca]\nsuperseded_grace = "3d"\n')
    config = load_config(path, env={"BROKERGATE_GATEWAY__PORT": "10443"})
    assert config.gateway.port == 10443
    assert config.ca.superseded_grace == timedelta(days=3)
    assert config.source == str(path)


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        ("[gateway]\nprot = 1\n", "gateway.prot", "unknown key"),
        ("[gatewya]\n", "gatewya", "unknown section"),
        ('[gateway]\nport = "x"\n', "gateway.port", "whole number"),
        ("[gateway]\nport = 70000\n", "gateway", "between 1 and 65535"),
        ('[ca]\nleaf_key_type = "dsa"\n', "ca.leaf_key_type", "one of"),
        ('[ca]\ncrl_validity = "two days"\n', "ca.crl_validity", "duration"),
        ("[ca]\nleaf_validity_years = 0\n", "ca", "at least 1"),
        ('[ca]\npassphrase = "hunter2"\n', "ca.passphrase", "passphrase_file"),
        ("[gateway\n", "(file)", "not valid TOML"),
    ],
)
def test_invalid_values_name_key_and_file(tmp_path: Path, toml: str, key: str, words: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == key
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_unknown_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="BROKERGATE_GATEWAY__PROT"):
        load_config(None, env={"BROKERGATE_GATEWAY__PROT": "1"})


def test_secret_from_file_and_environment(tmp_path: Path) -> None:
    secret = tmp_path / "passphrase"
    secret.write_text("from a file\n", encoding="utf-8")
    path = write(tmp_path, f'[ca]\npassphrase_file = "{secret}"\n')
    assert load_config(path, env={}).ca.passphrase == "from a file"
    env = {"BROKERGATE_CA__PASSPHRASE": "from env"}
    assert load_config(path, env=env).ca.passphrase == "from env"
    assert "from env" not in repr(load_config(path, env=env))


def test_missing_secret_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, f'[ca]\npassphrase_file = "{tmp_path / "nope"}"\n')
    with pytest.raises(ConfigError, match=r"ca\.passphrase_file.*cannot read"):
        load_config(path, env={})


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml", env={})


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("2w", 1209600)])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_configuration_reference_document_is_current() -> None:
    documented = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert documented == render_reference(), (
        "docs/configuration.md is stale: run `brokergate config reference > docs/configuration.md`"
    )


def test_cli_reports_bad_config_with_exit_2(run_cli: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "[store]\nurll = 1\n")
    result = run_cli("--config", str(path), "config", "check")
    assert result.code == 2
    assert "store.urll" in result.err and str(path) in result.err


def test_cli_config_check_ok(run_cli: CliRunner) -> None:
    result = run_cli("config", "check")
    assert result.code == 0, result.err
    assert "configuration OK" in result.out


def test_config_check_for_a_process_refuses_what_it_must_not_hold(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    """Issue 12: the gateway's configuration holds no CA secret; the signer's has a socket."""
    socket = str(tmp_path / "signer.sock")
    # cli_env gives the CA passphrase: right for the signer, wrong for gateway and renewal.
    with_socket = {"BROKERGATE_SIGNER__SOCKET_PATH": socket}
    result = run_cli("config", "check", "--for", "gateway", env=with_socket)
    assert result.code == 2 and "ca.passphrase is set: only the signer may hold it" in result.err
    result = run_cli("config", "check", "--for", "renewal", env=with_socket)
    assert result.code == 2 and "ca.passphrase is set" in result.err
    assert run_cli("config", "check", "--for", "signer", env=with_socket).code == 0
    result = run_cli("config", "check", "--for", "signer")
    assert result.code == 2 and "signer.socket_path is not set" in result.err
    keyless = {**with_socket, "BROKERGATE_CA__PASSPHRASE": ""}
    assert run_cli("config", "check", "--for", "gateway", env=keyless).code == 0
    result = run_cli("config", "check", "--for", "signer", env=keyless)
    assert result.code == 2 and "cannot open the CA keys" in result.err
    # The gateway itself refuses to start with both.
    result = run_cli("gateway", "serve", env=with_socket)
    assert result.code == 2 and "remove the passphrase" in result.err
