"""Dead letters as outbox records, so they commit with the batch that rejected them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

from aiokafka.structs import ConsumerRecord

from models import ContractModel, DeadLetter, DecodeError, decode, encode
from suspensions.db.repository import OutboxRecord
from suspensions.metrics import Metrics
from topics import DEADLETTER

log = logging.getLogger(__name__)
T = TypeVar("T", bound=ContractModel)


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


def decode_customer_records(
    records: Sequence[ConsumerRecord], model: type[T], worker: str, metrics: Metrics
) -> tuple[list[tuple[int, T]], dict[int, list[OutboxRecord]]]:
    """Decode a batch of a customer topic: (position, record) for the good ones, dead letters by position."""
    decoded: list[tuple[int, T]] = []
    dead: dict[int, list[OutboxRecord]] = {}
    for position, record in enumerate(records):
        try:
            value = decode(model, record.value)
            key_error = check_customer_key(record.key, value.customer_id)  # type: ignore[attr-defined]
            if key_error:
                raise DecodeError(key_error)
        except DecodeError as error:
            dead[position] = [dead_letter_record(record, str(error), worker, metrics)]
            continue
        decoded.append((position, value))
    return decoded, dead
