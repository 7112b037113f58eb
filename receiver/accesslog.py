"""gunicorn's access log, with every request-supplied value escaped.

gunicorn quotes double quotes in its atoms and nothing else, so a path with
``%0A`` (decoded into PATH_INFO) wrote a line break, and the rest of the path
became a forged log line. Here control characters, backslashes and anything
not printable are written as ``\\xNN`` / ``\\uNNNN`` escapes. Selected in
gunicorn.conf.py (`logger_class`).
"""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger, SafeAtoms

_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f"\\\u2028\u2029]')


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"


def escape(value: str) -> str:
    """`value` on one line, with nothing a log reader could mistake for a field boundary."""
    return _UNSAFE.sub(_escape, value)


class EscapedAtoms(SafeAtoms):
    """Escapes an atom when the log format reads it: a line uses a few of the fifty or so atoms."""

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        return escape(value) if isinstance(value, str) else value


class AccessLogger(Logger):
    atoms_wrapper_class = EscapedAtoms
