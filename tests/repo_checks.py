"""Repository hygiene checks, used by the test suite and by the pre-commit hook.

``python tests/repo_checks.py [FILE ...]`` exits 1 naming every file that holds a PEM
private key outside certs-dev/ (the only place generated keys may live, git-ignored).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout
    return [name for name in out.decode().split("\0") if name]


def files_with_private_keys(names: list[str]) -> list[str]:
    bad = []
    for name in names:
        if name.startswith("certs-dev/"):
            continue
        path = REPO / name
        if path.is_file() and PRIVATE_KEY.search(path.read_bytes()):
            bad.append(name)
    return bad


def main(argv: list[str]) -> int:
    bad = files_with_private_keys(argv or tracked_files())
    for name in bad:
        print(f"{name}: contains a private key; keys belong in certs-dev/ (git-ignored)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
