"""Reading compacted topics (the settings) to their end, and on: the one home of that loop.

A group-less consumer assigns every partition of the topics, reads from the beginning up to the high
watermark seen on fetch (``end_offsets`` is unreliable on the local broker, see ``caught_up``), says
so once, and either returns or keeps following updates. Like a Kafka Streams global table: every
reader sees every key. A fetch that fails is retried with the service's backoff (``retry``), never
left to end the reader. It never writes to the topics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from workers.runtime.config import Settings
from workers.runtime.kafka import caught_up, make_consumer, start_client
from workers.runtime.retry import retry

log = logging.getLogger(__name__)

ApplyRecord = Callable[[ConsumerRecord], Awaitable[None]]
FETCH_TIMEOUT_MS = 200
FETCH_MAX_RECORDS = 5_000


async def read_compacted(settings: Settings, topics: Sequence[str], apply: ApplyRecord, *,
                         on_caught_up: Callable[[], None] | None = None, follow: bool = False,
                         fetch_max_wait_ms: int | None = None) -> None:
    """Feed every record of ``topics`` to ``apply``, from the beginning; call ``on_caught_up`` once the end
    is reached, then return (or, with ``follow``, go on until cancelled)."""
    options = {} if fetch_max_wait_ms is None else {"fetch_max_wait_ms": fetch_max_wait_ms}
    consumer = make_consumer(settings, None, **options)
    await start_client(consumer, settings)
    try:
        partitions = await _all_partitions(consumer, topics)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        loaded = False
        while True:
            batches = await _fetch(consumer, settings)
            for records in batches.values():
                for record in records:
                    await apply(record)
            if not loaded and await caught_up(consumer, partitions):
                loaded = True
                if on_caught_up is not None:
                    on_caught_up()
                if not follow:
                    return
    finally:
        await consumer.stop()


async def _fetch(consumer: AIOKafkaConsumer, settings: Settings) -> dict[TopicPartition, list[ConsumerRecord]]:
    def failed(error: BaseException, delay: float) -> None:
        log.warning("reading a compacted topic failed, retrying", extra={"error": repr(error), "backoff_s": delay})

    batches: dict[TopicPartition, list[ConsumerRecord]]
    batches, _ = await retry(lambda: consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=FETCH_MAX_RECORDS),
                             (KafkaError,), settings.backoff, failed)
    return batches


async def _all_partitions(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of the topics, waiting for their metadata (a topic just created has none yet)."""
    partitions: list[TopicPartition] = []
    for topic in topics:
        ids = consumer.partitions_for_topic(topic)
        while ids is None:
            await consumer.topics()
            ids = consumer.partitions_for_topic(topic)
            if ids is None:
                await asyncio.sleep(0.2)
        partitions.extend(TopicPartition(topic, p) for p in sorted(ids))
    return partitions
