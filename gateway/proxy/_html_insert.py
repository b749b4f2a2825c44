"""A fragment of ours inside a portal page, right after its ``<body>`` tag (issue 15: the
optional renewal banner in the portal's own pages, off by default).

Only where it cannot break the page: a complete HTML answer (status 200, ``text/html``,
a Content-Length up to ``MAX_HTML``), not compressed (the request asked the portal for
``identity``), in an ASCII-compatible charset. Everything else passes through untouched.
The fragment is written as ASCII with character references, so it reads right in UTF-8
and in ISO-8859-1 pages alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MAX_HTML", "can_insert", "insert_after_body"]

MAX_HTML = 1024 * 1024  # pages read whole to insert into; larger ones stream untouched

# Hand-written: a full HTML parser (html5lib) would cost a parse of every page for one tag.
_BODY_TAG = re.compile(rb"<body(?:[\s/][^>]*)?>", re.IGNORECASE)
_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9._:-]+)", re.IGNORECASE)
_ASCII_COMPATIBLE = {
    "utf-8",
    "utf8",
    "iso-8859-1",
    "latin1",
    "latin-1",
    "windows-1252",
    "cp1252",
    "iso-8859-15",
    "us-ascii",
    "ascii",
}


def can_insert(status: int, headers: Mapping[str, str], length: int | None) -> bool:
    """Whether an answer with this status, these headers and this length may get the
    fragment."""
    if status != 200 or length is None or length > MAX_HTML:
        return False
    encoding = headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return False
    content_type = headers.get("Content-Type", "")
    if content_type.split(";", 1)[0].strip().lower() != "text/html":
        return False
    charset = _CHARSET.search(content_type)
    return charset is None or charset.group(1).lower() in _ASCII_COMPATIBLE


def insert_after_body(page: bytes, fragment: str) -> bytes | None:
    """``page`` with ``fragment`` after its first ``<body …>`` tag; None without one."""
    tag = _BODY_TAG.search(page)
    if tag is None:
        return None
    encoded = fragment.encode("ascii", "xmlcharrefreplace")
    return page[: tag.end()] + encoded + page[tag.end() :]
