"""Reading a topic whole, in batches, up to the end it had when the reading started.

A group-less consumer assigns every partition and reads from the beginning; each partition's end is the
high watermark of its first fetch (``end_offsets`` is wrong on the local broker, see LOCAL_BROKER.md; the
two agree on Apache Kafka), so records appended meanwhile (workers left running during a check) are not
waited for. Batches are handed out as they come: the caller writes each before the next is fetched, so
memory holds one batch, whatever the topic's size.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from workers.runtime.config import Settings
from workers.runtime.kafka import make_consumer, start_client

BATCH_RECORDS = 5_000
METADATA_TIMEOUT_S = 30.0
SILENCE_TIMEOUT_S = 60.0  # no fetch answer for this long: the broker went away


@asynccontextmanager
async def topic_consumer(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = make_consumer(settings, None)
    await start_client(consumer, settings)
    try:
        yield consumer
    finally:
        await consumer.stop()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    deadline = time.monotonic() + METADATA_TIMEOUT_S
    while (ids := consumer.partitions_for_topic(topic)) is None:
        if time.monotonic() > deadline:
            raise LookupError(f"topic {topic} does not exist (run `suspensions topics create`)")
        await consumer.topics()
        await asyncio.sleep(0.1)
    return [TopicPartition(topic, partition) for partition in sorted(ids)]


async def read_whole(consumer: AIOKafkaConsumer, topic: str,
                     start: dict[int, int] | None = None) -> AsyncIterator[list[ConsumerRecord]]:
    """Every record of ``topic`` (from ``start`` per partition where given, else the beginning) up to each
    partition's end when first fetched, in batches of at most ``BATCH_RECORDS``."""
    partitions = await partitions_of(consumer, topic)
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    for tp in partitions:
        if start is not None and start.get(tp.partition) is not None:
            consumer.seek(tp, start[tp.partition])
    ends: dict[TopicPartition, int] = {}
    done: set[TopicPartition] = set()
    heard = time.monotonic()
    while len(done) < len(partitions):
        batches = await consumer.getmany(timeout_ms=200, max_records=BATCH_RECORDS)
        out: list[ConsumerRecord] = []
        for tp in partitions:
            if tp in done:
                continue
            highwater = consumer.highwater(tp)
            if highwater is not None and tp not in ends:
                ends[tp] = highwater
                heard = time.monotonic()
            end = ends.get(tp)
            out.extend(record for record in batches.get(tp, ()) if end is None or record.offset < end)
            if end is not None and await consumer.position(tp) >= end:
                done.add(tp)
                consumer.pause(tp)
        if out or any(batches.values()):
            heard = time.monotonic()  # records came: the broker answers (highwater() is only the last one cached)
        if out:
            yield out
        elif time.monotonic() - heard > SILENCE_TIMEOUT_S:
            raise TimeoutError(f"no answer from the broker for {topic} in {SILENCE_TIMEOUT_S:.0f} s")
    consumer.unsubscribe()  # else the client's metadata narrows to this topic, and the next one is not found
