"""Publish many records at once: one producer batch per partition instead of one send per record.

Per-partition order is the order given. Keys are partitioned exactly as the producer's default
partitioner would (murmur2), so a customer's records land where its other records are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

_partitioner = DefaultPartitioner()


class Outgoing(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


async def publish_all(producer: AIOKafkaProducer, records: Iterable[Outgoing]) -> None:
    """Send every record and wait until the broker acknowledged all of them."""
    partitions: dict[str, list[int]] = {}
    grouped: dict[tuple[str, int], list[Outgoing]] = {}
    for record in records:
        if record.topic not in partitions:
            partitions[record.topic] = sorted(await producer.partitions_for(record.topic))
        all_partitions = partitions[record.topic]
        partition = _partitioner(record.key, all_partitions, all_partitions)
        grouped.setdefault((record.topic, partition), []).append(record)

    deliveries: list[asyncio.Future] = []
    for (topic, partition), group in grouped.items():
        batch = producer.create_batch()
        for record in group:
            if batch.append(key=record.key, value=record.value, timestamp=None, headers=list(record.headers)):
                continue
            if batch.record_count():
                deliveries.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=record.key, value=record.value, timestamp=None, headers=list(record.headers)):
                    continue
            # Larger than a whole batch: the producer's own path (bounded by max_request_size).
            deliveries.append(await producer.send(topic, record.value, key=record.key, partition=partition,
                                                  headers=list(record.headers)))
        if batch.record_count():
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*deliveries)
