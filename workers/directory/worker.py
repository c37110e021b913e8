"""The directory worker's loop: fetch a batch, write its rows in one transaction, publish its dead letters,
then commit the offsets.

Every write is idempotent (profiles last-write-wins by the record's own moment, dead letters once per
rejected record), so the loop needs no outbox: a crash before the offsets are committed replays the batch
with no second effect, and re-publishes a dead letter at most with the same ``record_id`` header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from topics import CUSTOMER_PROFILE, CUSTOMER_SIGNUPS, DEADLETTER
from workers.directory import rules, store
from workers.runtime.context import WorkerContext
from workers.runtime.dependency_retry import retry_dependency
from workers.runtime.kafka import make_consumer
from workers.runtime.publishing import publish_all
from workers.runtime.retention import Pruner, directory_rules
from workers.runtime.supervise import run_beside

log = logging.getLogger(__name__)
TOPICS = (CUSTOMER_SIGNUPS.name, CUSTOMER_PROFILE.name, DEADLETTER.name)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka's base class is untyped
    def __init__(self, worker: DirectoryWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._worker.context.health.revoked()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._worker.context.health.assigned(len(assigned))


class DirectoryWorker:
    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self.pruner = Pruner(directory_rules(context.settings), context.database, context.settings, context.metrics)

    async def run(self, stop: asyncio.Event) -> None:
        await run_beside(self._consume(stop), self.pruner.run(stop))

    async def _consume(self, stop: asyncio.Event) -> None:
        settings, health = self.context.settings, self.context.health
        consumer = make_consumer(settings, self.context.group, max_poll_records=settings.batch_max_records)
        consumer.subscribe(list(TOPICS), listener=_Rebalance(self))
        await self._retry(consumer.start, "kafka")
        health.kafka_ok = True
        log.info("worker started", extra={"worker": self.context.name, "group": self.context.group})
        try:
            while not stop.is_set():
                health.beat()
                try:
                    batches = await consumer.getmany(timeout_ms=settings.batch_timeout_ms * 4 or 100,
                                                     max_records=settings.batch_max_records)
                except KafkaError as error:
                    health.kafka_ok = False
                    log.warning("fetch failed, retrying", extra={"worker": self.context.name, "error": repr(error)})
                    await asyncio.sleep(settings.retry_initial_backoff_s)
                    continue
                health.kafka_ok = True
                if batches:
                    await self._apply(consumer, batches)
        finally:
            await consumer.stop()  # leaves the group
            health.kafka_ok = False
            health.revoked()
            log.info("worker stopped", extra={"worker": self.context.name})

    async def _apply(self, consumer: AIOKafkaConsumer,
                     batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        records = [record for batch in batches.values() for record in batch]
        planned = rules.plan(records, self.context.name, self.context.metrics)
        pool = self.context.database

        async def write() -> None:
            async with pool.acquire() as conn:
                await store.write(conn, planned.profiles, planned.dead_letters)

        await self._retry(write, "postgresql")
        self.context.health.database_ok = True
        if planned.to_publish:
            await self._retry(lambda: publish_all(self.context.producer, planned.to_publish), "kafka")
        for topic in {tp.topic for tp in batches}:
            consumed = sum(len(batch) for tp, batch in batches.items() if tp.topic == topic)
            self.context.metrics.records_consumed.labels(worker=self.context.name, topic=topic).inc(consumed)
        try:
            await consumer.commit({tp: batch[-1].offset + 1 for tp, batch in batches.items()})
        except KafkaError as error:  # applied and idempotent: the next owner re-reads and changes nothing
            log.warning("offset commit failed", extra={"worker": self.context.name, "error": repr(error)})

    async def _retry(self, action: Callable[[], Awaitable[object]], dependency: str) -> None:
        await retry_dependency(self.context, action, dependency)
