"""Small output helpers shared by the CLI modules: tables, JSON, private files."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str], out: TextIO) -> None:
    """A plain aligned table (no colour: output is often piped or logged); ``(none)`` under
    the headers when there are no rows."""
    cells = [[_text(c) for c in row] for row in rows]
    # A list, not max(len(h), *...): with no rows that was max(int), a TypeError (issue 16).
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), file=out)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    if not cells:
        print("(none)", file=out)


def print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False), file=out)


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def format_time(value: datetime) -> str:
    """A stored (UTC) time for a person: to the second, with its zone, no microseconds."""
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


def check_new_file(path: Path) -> None:
    """Fail early (before any state change) if ``path`` cannot be created."""
    if path.exists():
        raise FileExistsError(f"{path} exists already; choose another --out or move it away")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (never overwriting) and write ``data``.

    # SECURITY: O_EXCL + mode 0600 at creation, so the file is never readable by others,
    # not even between open and chmod.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
