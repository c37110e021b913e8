"""A record that could not be processed, with the reason and its original bytes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from models.base import ContractModel


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
        text: str | None = None
        b64: str | None = None
        if value is not None:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                b64 = base64.b64encode(value).decode("ascii")
        key_text = None if key is None else key.decode("utf-8", errors="replace")
        return cls(
            source_topic=topic,
            partition=partition,
            offset=offset,
            key=key_text,
            value=text,
            value_b64=b64,
            error=error,
            worker=worker,
            failed_at=datetime.now(UTC),
        )
