"""Strict JSON: what every later stage can store, read back and forward (SPEC 3).

Python's `json` accepts more than JSON: `NaN` and `Infinity`, numbers that
overflow to infinity (`1e999`), lone surrogates (`"\\ud800"`, which no UTF-8
store can hold), UTF-16/32 and BOM-prefixed bytes, and nesting as deep as the
interpreter's recursion limit. Each of those once got past the door and broke
a later stage (SQLite could not read the row back, the sink wrote non-standard
JSON, `redact()` overflowed the stack). Parse bodies with `loads()`; it raises
`NotStrictJson` with a message fit for the 400 answer.
"""

from __future__ import annotations

import codecs
import json
import math
from typing import Any

MAX_DEPTH = 64


class NotStrictJson(ValueError):
    """The bytes are not strict UTF-8 JSON; the message says why, without echoing them."""


def _no_constant(name: str) -> Any:
    raise NotStrictJson(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotStrictJson("a number is too large to represent")
    return value


def loads(raw: bytes) -> Any:
    """The JSON value of `raw`, or NotStrictJson."""
    if raw.startswith(codecs.BOM_UTF8):
        raise NotStrictJson("body starts with a byte order mark: send UTF-8 without BOM")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotStrictJson("body is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except NotStrictJson:
        raise
    except RecursionError:
        raise NotStrictJson(f"body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:  # JSONDecodeError, or an integer past Python's digit limit
        raise NotStrictJson(f"body is not valid JSON ({_position(error)})") from None
    # Cheap tests first: most bodies cannot nest deep or hold an escaped surrogate at all.
    if text.count("[") + text.count("{") > MAX_DEPTH and nests_deeper_than(value, MAX_DEPTH):
        raise NotStrictJson(f"body nests deeper than {MAX_DEPTH} levels")
    if "\\u" in text and has_lone_surrogate(value):
        raise NotStrictJson("body holds a lone surrogate (an unpaired \\ud800-\\udfff escape)")
    return value


def _position(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    return "a number has too many digits"


def nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than `limit` levels (`{}` is one level); no recursion."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def has_lone_surrogate(value: Any) -> bool:
    """Whether any key or string holds a code point UTF-8 cannot encode."""
    try:
        json.dumps(value, ensure_ascii=False, check_circular=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
