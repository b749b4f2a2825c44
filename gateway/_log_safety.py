"""One escaping for every client-controlled value in a log line (issue 17, item 8).

SECURITY: a decoded path, a header or a typed identifier can carry CR/LF (``%0d%0a``), NEL
(U+0085), the Unicode line and paragraph separators, or bidi overrides; logged as they are,
they forge a second log line or make one read as something else (CWE-117). ``log_safe``
writes each such character as a Python-style escape (``\\r``, ``\\x85``, ``\\u2028``) and
doubles backslashes, so the escaped text is unambiguous and one value is one line.
"""

from __future__ import annotations

__all__ = ["LOG_VALUE_LIMIT", "log_safe"]

LOG_VALUE_LIMIT = 300  # characters of one value in a log line; a path can be 8 KiB
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
# Everything str.isprintable() refuses is escaped: Cc (C0/C1 controls, DEL), Cf (bidi
# overrides, zero-width joiners), Zl/Zp (U+2028/U+2029, which log viewers and
# str.splitlines() take as line breaks), Zs other than the space, Cs/Co/Cn.


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    if char.isprintable():
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def log_safe(value: object, limit: int = LOG_VALUE_LIMIT) -> str:
    """``value`` as text for a log line: no line breaks or control/format characters
    (escaped instead), at most ``limit`` characters (then ``…`` and the full length)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = f"{text[:limit]}…({len(text)} chars)"
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to escape
    return "".join(map(_escape, text))
