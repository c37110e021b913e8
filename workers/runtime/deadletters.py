"""The one dead-letter builder of every worker, and the decoding of customer topics that feeds it.

A dead letter is an ``OutgoingRecord``: the state and billing workers write it to the outbox
so it commits with the batch that rejected it; the triggers worker publishes it before it
acknowledges the event. Its record id is the source record's ``topic:partition:offset``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, TypeVar

from models import DeadLetter, DecodeError, InvoiceJob, InvoiceStatus, SuspensionCommand, decode, encode
from models.deadletter import dead_letter_key
from topics import DEADLETTER
from workers.runtime.metrics import Metrics
from workers.runtime.poison import cause, describe
from workers.runtime.publishing import OutgoingRecord

log = logging.getLogger(__name__)
# The customer-keyed records a batch worker consumes.
CustomerRecord = TypeVar("CustomerRecord", SuspensionCommand, InvoiceJob, InvoiceStatus)


class SourceRecord(Protocol):
    """What a dead letter needs of the record it rejects (aiokafka's ConsumerRecord, faust's message)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def dead_letter(record: SourceRecord, error: str, worker: str, metrics: Metrics,
                log_reason: str | None = None) -> OutgoingRecord:
    """The dead letter of one record. Logged and counted once it is published (once per record, however
    often a failing batch made it; one a crashed worker left in the outbox is published by the next owner
    without a log line of its own, counted with the recovered records), with where the record is and why:
    ``log_reason`` when the error text may quote the record's values, which the log must not hold (the
    letter does)."""
    letter = DeadLetter.for_record(
        topic=record.topic, partition=record.partition, offset=record.offset,
        key=record.key, value=record.value, error=error, worker=worker,
    )
    where = {"worker": worker, "topic": record.topic, "partition": record.partition, "offset": record.offset,
             "error": error if log_reason is None else log_reason}

    def published() -> None:
        metrics.dead_letters.labels(topic=where["topic"]).inc()
        log.warning("dead letter", extra=where)

    return OutgoingRecord(
        topic=DEADLETTER.name,
        key=dead_letter_key(record.key),
        value=encode(letter),
        record_id=f"{record.topic}:{record.partition}:{record.offset}",
        source_partition=record.partition,
        on_published=published,
    )


def poison_letter(record: SourceRecord, error: BaseException, worker: str, metrics: Metrics) -> OutgoingRecord:
    """The dead letter of a record the contract accepted but that could not be applied (``poison.py``),
    counted by its cause; the log names the cause only, the letter holds the full reason."""
    label = cause(error)
    metrics.poison_records.labels(worker=worker, cause=label).inc()
    return dead_letter(record, f"refused while being applied: {describe(error)}", worker, metrics, log_reason=label)


def check_customer_key(key: bytes | None, customer_id: str) -> None:
    """The contract keys customer topics by customer_id; a mismatch is bad input (DecodeError)."""
    shown = None if key is None else key.decode("utf-8", errors="replace")
    if shown != customer_id:
        raise DecodeError(f"record key {shown!r} does not match customer_id '{customer_id}'")


def decode_customer_records(
    records: Sequence[SourceRecord], model: type[CustomerRecord], worker: str, metrics: Metrics
) -> tuple[list[tuple[int, CustomerRecord]], dict[int, list[OutgoingRecord]]]:
    """Decode a batch of a customer topic: (position, record) for the good ones, dead letters by position."""
    decoded: list[tuple[int, CustomerRecord]] = []
    dead: dict[int, list[OutgoingRecord]] = {}
    for position, record in enumerate(records):
        try:
            value = decode(model, record.value)
            check_customer_key(record.key, value.customer_id)
        except DecodeError as error:
            dead[position] = [dead_letter(record, str(error), worker, metrics)]
            continue
        decoded.append((position, value))
    return decoded, dead
