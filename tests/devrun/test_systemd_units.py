"""deploy/systemd: the units parse (systemd-analyze verify), carry the hardening the docs
promise, and their environment really configures brokergate (secrets as files)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from brokergate._cli_config import process_problems
from brokergate._config import load_config
from tests.conftest import REPO

UNITS = sorted((REPO / "deploy" / "systemd").glob("*.service"))
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "UMask": "0077",
}


def service_entries(unit: Path) -> list[tuple[str, str]]:
    entries = []
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#") and section == "Service":
            key, _, value = line.partition("=")
            entries.append((key, value))
    return entries


# Issue 12: three OS users; only the signer's unit hands over the CA passphrase.
PROCESS = {
    "brokergate-gateway.service": "gateway",
    "brokergate-renewal.service": "renewal",
    "brokergate-signer.service": "signer",
}


def test_the_three_units_exist() -> None:
    assert [u.name for u in UNITS] == sorted(PROCESS)


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_hardening_and_no_inline_secret(unit: Path) -> None:
    entries = service_entries(unit)
    values = dict(entries)
    for key, expected in HARDENING.items():
        assert values.get(key) == expected, f"{unit.name}: {key}"
    assert values["User"] == f"brokergate-{PROCESS[unit.name]}"
    env = [v for k, v in entries if k == "Environment"]
    credentials = {v.split(":", 1)[0] for k, v in entries if k == "LoadCredential"}
    for assignment in env:
        name, _, value = assignment.partition("=")
        if "SECRET" in name or "PASSPHRASE" in name or "PASSWORD" in name:
            # SECURITY: a secret is only ever a path into the credentials directory.
            assert name.endswith("_FILE"), assignment
            assert value.startswith("%d/") and value[3:] in credentials, assignment
    assert values["ExecStart"].startswith("/opt/brokergate/venv/bin/brokergate ")


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_environment_configures_brokergate(unit: Path, tmp_path: Path) -> None:
    """%d becomes a credentials folder; the variables must load as the intended settings."""
    entries = service_entries(unit)
    creds = tmp_path / "credentials"
    creds.mkdir()
    for k, v in entries:
        if k == "LoadCredential":
            name = v.split(":", 1)[0]
            (creds / name).write_text(f"value-of-{name}-0123456789abcdef\n")
    env = {}
    for k, v in entries:
        if k == "Environment":
            name, _, value = v.partition("=")
            env[name] = value.replace("%d", str(creds))
    config_file = env.pop("BROKERGATE_CONFIG")
    assert config_file == "/etc/brokergate/brokergate.toml"
    site = tmp_path / "brokergate.toml"  # stands for /etc/brokergate/brokergate.toml
    site.write_text("")
    config = load_config(site, env=env)
    assert config.store.secret_key == b"value-of-secret-key-0123456789abcdef"
    process = PROCESS[unit.name]
    # What `brokergate config check --for PROCESS` checks: no CA secret outside the signer.
    assert process_problems(config, process) == []
    if process == "signer":
        assert config.ca.passphrase == "value-of-ca-passphrase-0123456789abcdef"
        assert config.signer.socket_group == "brokergate-gateway"
    else:
        assert config.ca.passphrase == "" and "ca-passphrase" not in unit.read_text()
    assert str(config.signer.socket_path) == "/run/brokergate-signer/signer.sock"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_accepts_the_units(tmp_path: Path) -> None:
    brokergate = Path(sys.executable).parent / "brokergate"
    for unit in UNITS:
        # The only change: ExecStart points at this venv's console script, which exists here.
        text = unit.read_text().replace("/opt/brokergate/venv/bin/brokergate", str(brokergate))
        (tmp_path / unit.name).write_text(text)
    (tmp_path / "typo.service").write_text("[Service]\nExecStart=/bin/true\nNoNewPrivilegs=yes\n")
    good = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / u.name) for u in UNITS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert good.returncode == 0 and good.stdout + good.stderr == "", good.stdout + good.stderr
    # Negative: the same check notices a misspelt directive.
    bad = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "typo.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Unknown key" in bad.stdout + bad.stderr
