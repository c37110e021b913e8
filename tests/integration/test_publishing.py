"""Records published together land where the producer's default partitioner puts their keys.

The compacted state topic keeps a customer's latest record only if every record of that customer
lands on one partition: `send_all` groups records by partition itself, so it is held here to
murmur2, across topics of different partition counts, with keys repeated within one publish.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from tests.support import uid, wait_until
from workers.runtime.config import Settings
from workers.runtime.publishing import OutgoingRecord, publish_all


def murmur2_partition(key: bytes, partitions: int) -> int:
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


async def test_keys_land_on_their_murmur2_partition_across_topics_of_different_sizes(
    settings: Settings, producer: AIOKafkaProducer
) -> None:
    run = uid("pub")
    sizes = {f"test.publish.four-a.{run}": 4, f"test.publish.four-b.{run}": 4, f"test.publish.three.{run}": 3}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, count, 1) for name, count in sizes.items()])
    finally:
        await admin.close()
    first = next(iter(sizes))
    keyed = [OutgoingRecord(topic, f"{run}-customer-{i}".encode(), f"{i}".encode(), None)
             for i in range(60) for topic in sizes]  # each key on every topic, in the same publish
    unkeyed = [OutgoingRecord(first, None, b"no key", None) for _ in range(40)]
    await publish_all(producer, [*keyed, *unkeyed])

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    await consumer.start()
    try:
        partitions = [TopicPartition(name, p) for name, count in sizes.items() for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen: list[tuple[str, bytes | None, int]] = []

        async def all_read() -> bool:
            batches = await consumer.getmany(timeout_ms=200)
            seen.extend((r.topic, r.key, r.partition) for batch in batches.values() for r in batch)
            return len(seen) >= len(keyed) + len(unkeyed)

        await wait_until(all_read, 30, "every published record read back")
    finally:
        await asyncio.shield(consumer.stop())

    assert len(seen) == len(keyed) + len(unkeyed)
    placed = {(topic, key): partition for topic, key, partition in seen if key is not None}
    assert placed == {(r.topic, r.key): murmur2_partition(r.key, sizes[r.topic]) for r in keyed if r.key}
    # Records without a key are spread at random, not pinned to the partition of the first one.
    assert len(Counter(partition for topic, key, partition in seen if key is None)) > 1
