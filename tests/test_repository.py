"""The repository itself: no private keys committed, CI runs exactly the README's command."""

from __future__ import annotations

from pathlib import Path

from tests.repo_checks import PRIVATE_KEY, REPO, files_with_private_keys, tracked_files


def test_no_private_key_is_tracked() -> None:
    assert files_with_private_keys(tracked_files()) == []


def test_the_check_finds_a_key(tmp_path: Path) -> None:
    dashes = b"-" * 5  # built, so that this file itself does not hold a key marker
    assert PRIVATE_KEY.search(b"x\n" + dashes + b"BEGIN ENCRYPTED PRIVATE KEY" + dashes)
    assert PRIVATE_KEY.search(dashes + b"BEGIN PRIVATE KEY" + dashes)
    assert not PRIVATE_KEY.search(dashes + b"BEGIN CERTIFICATE" + dashes)


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme
    commands = [
        line.strip()
        for line in ci.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == "make test"
