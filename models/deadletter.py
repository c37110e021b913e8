"""A record that could not be processed, with the reason and its original bytes."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

from models.base import ContractModel

# A dead letter must stay publishable: a larger original value is cut, and the dead letter says so.
# The full record stays on its source topic at the partition and offset named.
MAX_DEAD_LETTER_VALUE_BYTES = 256 * 1024
# A key is cut too (in the letter and as the letter's own key): a hostile key can be as large as a value.
MAX_DEAD_LETTER_KEY_BYTES = 1024
# The reason is cut too: a database's message may quote the record's value.
MAX_DEAD_LETTER_ERROR_CHARS = 4000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The key a dead letter is published with: the original key, or its first 1 KiB."""
    return key if key is None or len(key) <= MAX_DEAD_LETTER_KEY_BYTES else key[:MAX_DEAD_LETTER_KEY_BYTES]


class DeadLetter(ContractModel):
    source_topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None = None
    value_b64: str | None = None
    error: str
    worker: str
    failed_at: datetime
    original_size: int | None = None  # set only when value was cut (addition to the contract)

    @classmethod
    def for_record(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        error: str,
        worker: str,
    ) -> DeadLetter:
        """Keep the original value as text when it is UTF-8, else as base64."""
        original_size = None
        if value is not None and len(value) > MAX_DEAD_LETTER_VALUE_BYTES:
            original_size = len(value)
            value = value[:MAX_DEAD_LETTER_VALUE_BYTES]
            error = (f"{error} (value cut to its first {MAX_DEAD_LETTER_VALUE_BYTES} of {original_size} bytes; "
                     f"the record stays at {topic}[{partition}]@{offset})")
        if key is not None and len(key) > MAX_DEAD_LETTER_KEY_BYTES:
            error = f"{error} (key cut to its first {MAX_DEAD_LETTER_KEY_BYTES} of {len(key)} bytes)"
            key = dead_letter_key(key)
        text, b64 = _as_text_or_base64(value, cut=original_size is not None)
        if len(error) > MAX_DEAD_LETTER_ERROR_CHARS:
            error = error[:MAX_DEAD_LETTER_ERROR_CHARS] + "..."
        return cls(
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=None if key is None else key.decode("utf-8", errors="replace"),
            value=text,
            value_b64=b64,
            error=error,
            worker=worker,
            failed_at=datetime.now(UTC),
            original_size=original_size,
        )


def _as_text_or_base64(value: bytes | None, *, cut: bool) -> tuple[str | None, str | None]:
    """Text when it is UTF-8 without control characters (other than tab and line ends); else base64, so the
    letter's JSON is at most about twice the cut value (escaped control characters would be six times)."""
    if value is None:
        return None, None
    try:
        text = value.decode("utf-8")
        return (None, base64.b64encode(value).decode("ascii")) if _CONTROL.search(text) else (text, None)
    except UnicodeDecodeError as error:
        # A cut can split the last character of otherwise valid UTF-8: drop that partial character.
        if cut and error.start >= len(value) - 3:
            return _as_text_or_base64(value[: error.start], cut=False)
        return None, base64.b64encode(value).decode("ascii")
