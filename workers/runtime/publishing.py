"""The one outgoing record type, and publishing many at once: one producer batch per partition.

Per-partition order is the order given. Keys are partitioned exactly as the producer's default
partitioner would (murmur2), so a customer's records land where its other records are. Each
record's id travels in the header its topic declares in the catalogue (``TopicSpec.id_header``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from models import SuspensionCommand, encode
from topics import SUSPENSION_COMMANDS, by_name

_partitioner = DefaultPartitioner()


@dataclass(slots=True)
class OutgoingRecord:
    """A record to publish. Written to the outbox by the state and billing workers, or published
    at once by the triggers worker and the operators' commands."""

    topic: str
    key: bytes | None
    value: bytes
    record_id: str | None  # travels as a header so consumers can deduplicate; None: no header
    source_partition: int = 0  # the partition of the record that caused it (groups the outbox rows)
    event_time: float | None = None  # for the latency metric only; not stored
    extra_headers: tuple[tuple[str, bytes], ...] = ()  # e.g. CloudEvents attributes; stored in the outbox
    # Run once the broker acknowledged the record (a dead letter's log line and count): not at creation,
    # since a batch that fails and is split makes its records again. Not stored in the outbox.
    on_published: Callable[[], None] | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        if self.record_id is None:
            return list(self.extra_headers)
        return [(by_name(self.topic).id_header, self.record_id.encode()), *self.extra_headers]


CLOUDEVENTS_SOURCE = b"/suspensions"
_JSON = b"application/json"
_SPEC_VERSION = b"1.0"


def cloudevent_headers(ce_id: str, ce_type: str, ce_time: str, subject: str) -> tuple[tuple[str, bytes], ...]:
    """CloudEvents attributes in binary mode (the Kafka protocol binding): one header each, the record
    value staying the plain JSON record, so consumers that ignore headers see no change."""
    return (
        ("ce_specversion", _SPEC_VERSION), ("ce_id", ce_id.encode()), ("ce_source", CLOUDEVENTS_SOURCE),
        ("ce_type", ce_type.encode()), ("ce_time", ce_time.encode()), ("ce_subject", subject.encode()),
        ("content-type", _JSON),
    )


def command_record(command: SuspensionCommand, source_partition: int = 0) -> OutgoingRecord:
    """A suspension command as published: keyed by customer, its id in the ``command_id`` header."""
    return OutgoingRecord(SUSPENSION_COMMANDS.name, command.customer_id.encode(), encode(command),
                          command.command_id, source_partition)


async def publish_all(producer: AIOKafkaProducer, records: Iterable[OutgoingRecord]) -> None:
    """Send every record and wait until the broker acknowledged all of them."""
    records = list(records)
    await asyncio.gather(*await send_all(producer, records))
    report_published(records)


def report_published(records: Iterable[OutgoingRecord]) -> None:
    """Run what waits for each record's acknowledgement (``on_published``)."""
    for record in records:
        if record.on_published is not None:
            record.on_published()


async def send_all(producer: AIOKafkaProducer, records: Iterable[OutgoingRecord]) -> list[asyncio.Future[object]]:
    """Hand every record to the producer, one batch per partition; each future resolves when the broker
    acknowledged its batch (and raises if it could not be delivered)."""
    partitions: dict[str, list[int]] = {}
    # A key's partition for a partition count: a state record and its lifecycle event share the key.
    placed: dict[tuple[bytes, int], int] = {}
    grouped: dict[tuple[str, int], list[OutgoingRecord]] = {}
    for record in records:
        if record.topic not in partitions:
            partitions[record.topic] = sorted(await producer.partitions_for(record.topic))
        all_partitions = partitions[record.topic]
        if record.key is None:  # a partition at random, each time
            partition = _partitioner(None, all_partitions, all_partitions)
        else:
            place = (record.key, len(all_partitions))
            partition = placed.get(place, -1)
            if partition < 0:
                partition = placed[place] = _partitioner(record.key, all_partitions, all_partitions)
        grouped.setdefault((record.topic, partition), []).append(record)

    deliveries: list[asyncio.Future[object]] = []
    for (topic, partition), group in grouped.items():
        batch = producer.create_batch()
        for record in group:
            headers = record.headers()
            if batch.append(key=record.key, value=record.value, timestamp=None, headers=headers):
                continue
            if batch.record_count():
                deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=record.key, value=record.value, timestamp=None, headers=headers):
                    continue
            # Larger than a whole batch: the producer's own path (bounded by max_request_size).
            deliveries.append(await producer.send(topic, record.value, key=record.key, partition=partition,
                                                  headers=headers))
        if batch.record_count():
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    return deliveries
