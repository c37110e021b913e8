"""Dead letters as outbox records, so they commit with the batch that rejected them."""

from __future__ import annotations

import logging

from aiokafka.structs import ConsumerRecord

from models import DeadLetter, encode
from suspensions.db.repository import OutboxRecord
from suspensions.metrics import Metrics
from topics import DEADLETTER

log = logging.getLogger(__name__)


def dead_letter_record(record: ConsumerRecord, error: str, worker: str, metrics: Metrics) -> OutboxRecord:
    letter = DeadLetter.for_record(
        topic=record.topic, partition=record.partition, offset=record.offset,
        key=record.key, value=record.value, error=error, worker=worker,
    )
    metrics.dead_letters.labels(topic=record.topic).inc()
    log.warning(
        "dead letter",
        extra={"worker": worker, "topic": record.topic, "partition": record.partition,
               "offset": record.offset, "error": error},
    )
    return OutboxRecord(
        topic=DEADLETTER.name,
        key=record.key,
        value=encode(letter),
        record_id=f"{record.topic}:{record.partition}:{record.offset}",
        source_partition=record.partition,
    )


def check_customer_key(key: bytes | None, customer_id: str) -> str | None:
    """The contract keys customer topics by customer_id; a mismatch is bad input."""
    shown = None if key is None else key.decode("utf-8", errors="replace")
    if shown != customer_id:
        return f"record key {shown!r} does not match customer_id '{customer_id}'"
    return None
