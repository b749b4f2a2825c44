"""The dev run's secrets: created once at random, kept in ``data/`` with mode 0600.

They reach the other processes only as ``*_file`` paths in the generated config, never
as values on a command line or in the output.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

SECRET_BYTES = 32  # 256 bits, the sealer's and the CA key encryption's full strength


class DevError(RuntimeError):
    """Base of the dev run's errors (the CLI prints the message and exits 1)."""


class DevSecretError(DevError):
    """A secret file exists but cannot be used; the message says which and what to do."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}; delete it (and data/ with it) to start afresh")


def ensure_secret_file(path: Path) -> bool:
    """Read back ``path`` if it exists, else create it with a fresh random secret.

    Returns:
        True if the file was created now.

    Raises:
        DevSecretError: the file is empty.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(SECRET_BYTES).encode()
    try:
        # SECURITY: O_EXCL + 0600 at creation: never readable by others, never overwritten
        # (overwriting the CA passphrase would lock the CA keys away for good).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _check_existing(path)
        return False
    with os.fdopen(fd, "wb") as fh:
        fh.write(value + b"\n")
    return True


def _check_existing(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        # SECURITY: a secret readable by others is tightened rather than refused: the dev
        # user may have copied data/ with a permissive umask; it is theirs alone again now.
        path.chmod(0o600)
    if not path.read_bytes().strip():
        raise DevSecretError(path, "the secret file is empty")
