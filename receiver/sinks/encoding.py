"""The one encoding of an event that every sink can carry: compact, standard JSON."""

from __future__ import annotations

import json
import re
from typing import Any

# Characters SQS accepts in a body or attribute value: #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF.
# Outside them (a lone surrogate, U+FFFE, control characters) a body is written with JSON escapes.
NOT_ALLOWED_BY_SQS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class UnencodableEvent(ValueError):
    """The event cannot be written as standard JSON (NaN or Infinity, nesting past the encoder's limit)."""


def encode_event(event: dict[str, Any]) -> str:
    """The event as compact, standard JSON that every sink can carry.

    UTF-8 is kept as is (smaller than \\u escapes, which matters against SQS's
    size limit), unless the text holds a character that UTF-8 or SQS refuses:
    then the whole text is ASCII with JSON escapes, which decodes to the very
    same event. NaN and Infinity, which JSON has no words for, raise
    UnencodableEvent: the worker then retries and buries that event's record
    alone.
    """
    try:
        text = json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        if NOT_ALLOWED_BY_SQS.search(text):
            text = json.dumps(event, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    except (ValueError, RecursionError) as error:
        raise UnencodableEvent(f"event {event.get('event_id')} is not standard JSON: {error}") from None
    return text
