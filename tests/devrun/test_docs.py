"""The README and the guides stay true: links resolve, `make help` and the tool list match
the Makefile, the architecture table names the packages that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    missing = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert missing == [], f"{page.name} links to files that do not exist: {missing}"


def test_the_link_check_notices_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [web](https://example.org/x) [gone](nothing-here.md#part)")
    assert relative_links(page) == ["page.md", "nothing-here.md"]


def test_readme_shows_the_two_commands_first() -> None:
    text = README.read_text()
    first_block = text.split("```")[3]  # the flow picture is block 1; the commands block 2
    assert first_block.split()[:2] == ["make", "run"] or "make run" in first_block
    assert "make run" in first_block and "make test" in first_block
    assert text.index("## The two commands") < text.index("## Other commands")


def test_readme_make_help_is_current() -> None:
    out = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.rstrip()
    assert f"```\n{out}\n```" in README.read_text(), "README's `make help` block is stale"


def test_readme_names_every_debian_package_make_test_installs() -> None:
    makefile = (REPO / "Makefile").read_text()
    tools = re.search(r"SYSTEM_TOOLS :=(.*?)\n\n", makefile, re.S)
    assert tools
    packages = {pair.split(":")[1] for pair in tools.group(1).replace("\\", " ").split()}
    readme = README.read_text()
    missing = [p for p in sorted(packages) if f"`{p}`" not in readme]
    assert missing == [], f"README does not say why make test installs {missing}"


def test_architecture_names_the_packages_that_exist() -> None:
    text = README.read_text().split("## Architecture", 1)[1]
    named = set(re.findall(r"^\| `(\w+)/` \|", text, re.M))
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "bench"}
    assert named == packages
