"""docs/cli.md is generated from the parser and current; every command's --help works."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from brokergate.__main__ import build_parser
from brokergate._cli_reference import render_cli_reference, walk_commands
from tests.conftest import REPO, CliRunner

COMMANDS = [path for path, _ in walk_commands(build_parser())]


def test_docs_cli_md_is_current() -> None:
    current = (REPO / "docs" / "cli.md").read_text()
    assert current == render_cli_reference(build_parser()), (
        "docs/cli.md is out of date: run `.venv/bin/python -m brokergate help-reference "
        "> docs/cli.md`"
    )


def test_the_reference_lists_every_command() -> None:
    text = render_cli_reference(build_parser())
    for path in COMMANDS:
        assert f"## `{' '.join(('brokergate', *path))}`" in text
    assert ("dev", "run") in COMMANDS and ("help-reference",) in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "(top)")
def test_every_help_works_and_is_complete(path: tuple[str, ...]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*path, "--help"])
    assert exited.value.code == 0
    assert out.getvalue().startswith(f"usage: {' '.join(('brokergate', *path))}")
    parser = dict(walk_commands(build_parser()))[path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            missing = [a.dest for a in action._choices_actions if not a.help]
        else:
            missing = [] if action.help else [action.dest]
        assert not missing, f"brokergate {' '.join(path)}: no help text for {missing}"


def test_unknown_command_is_refused(run_cli: CliRunner) -> None:
    result = run_cli("no-such-command")
    assert result.code == 2
    assert "invalid choice: 'no-such-command'" in result.err


def test_help_reference_command_prints_the_reference(run_cli: CliRunner) -> None:
    result = run_cli("help-reference")
    assert result.code == 0
    assert result.out == (REPO / "docs" / "cli.md").read_text()
