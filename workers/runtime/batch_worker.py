"""The consume loop shared by the state and billing workers.

One batch from ``getmany`` is handled in one unit of work (``workers/runtime/db/unit_of_work.py``: a
PostgreSQL transaction that also writes every record to publish into the outbox).
After the commit the outbox records are published, and only once the broker
acknowledged them are the Kafka offsets committed. Batches of different
partitions are in flight at the same time (``batch_max_in_flight``), never two
of the same partition. A crash anywhere leaves either an uncommitted transaction
(the batch is redelivered and re-applied) or committed outbox rows (published by
whoever owns the partition next, before it consumes). Handlers deduplicate by
ids, so a redelivered batch has no second effect. A batch that fails for a reason no retry cures
(poison: ``workers/runtime/poison.py``) is split until the refused record is found; that record is
dead-lettered and the rest applied, each part in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from workers.runtime.context import WorkerContext
from workers.runtime.db.unit_of_work import BatchStore, UnitOfWork
from workers.runtime.deadletters import poison_letter
from workers.runtime.dependency_retry import retry_dependency
from workers.runtime.kafka import make_consumer
from workers.runtime.outbox import Outbox
from workers.runtime.poison import isolate
from workers.runtime.publishing import OutgoingRecord
from workers.runtime.retry import retry

log = logging.getLogger(__name__)


# What a unit of work makes (the records to publish), and what committing it gave: row ids and records.
Produce = Callable[[BatchStore], Awaitable[list[OutgoingRecord]]]
Committed = list[tuple[list[int], list[OutgoingRecord]]]


class BatchHandler(Protocol):
    async def handle(self, store: BatchStore, records: Sequence[ConsumerRecord]) -> list[OutgoingRecord]:
        """Apply the batch through the unit of work's stores; return what to publish, in order."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka's base class is untyped
    def __init__(self, worker: BatchWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Batches in flight finish (applied, published, offsets committed) before partitions go.
        await self._worker.settle()
        self._worker.health.revoked()
        log.info("partitions revoked", extra={"worker": self._worker.name,
                                              "partitions": sorted(tp.partition for tp in revoked)})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._worker.health.assigned(len(assigned))
        self._worker.assigned = {tp.partition for tp in assigned}
        self._worker.outbox_to_flush.update(self._worker.assigned)
        log.info("partitions assigned", extra={"worker": self._worker.name,
                                               "partitions": sorted(tp.partition for tp in assigned)})


class BatchWorker:
    def __init__(self, context: WorkerContext, source_topic: str, handler: BatchHandler, *,
                 lock_in_first_read: bool = False) -> None:
        self.context = context
        self.name = context.name
        self.group_id = context.group
        self.settings = context.settings
        self.metrics = context.metrics
        self.health = context.health
        self.pool = context.database
        self.source_topic = source_topic
        self.handler = handler
        # True: the handler's first read takes the partition lock in its own round trip (the state worker's
        # ``read_for_commands``); else the unit of work takes it on entering, in a statement of its own.
        self.lock_in_first_read = lock_in_first_read
        self.outbox = Outbox(source_topic, self.pool, context.producer)
        self.assigned: set[int] = set()
        self.outbox_to_flush: set[int] = set()
        # Batches being applied, published and committed, by partition. A partition has at most one
        # batch in flight, so its records keep their order; batches of other partitions overlap it,
        # so one batch's Python work runs while another waits for PostgreSQL or the broker.
        self._in_flight: dict[TopicPartition, asyncio.Task[None]] = {}
        # Offsets of batches applied and published, committed together at most every
        # ``kafka_commit_interval_ms`` (and at once before a revocation or shutdown): one commit
        # request per batch cost the local broker as much CPU as the records themselves.
        self._offsets_to_commit: dict[TopicPartition, int] = {}
        self._commit_now = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()  # the runner's, once running

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        consumer = make_consumer(
            self.settings, self.group_id, max_poll_records=self.settings.batch_max_records
        )
        consumer.subscribe([self.source_topic], listener=_Rebalance(self))
        await self._retry(consumer.start, "kafka")
        self.health.kafka_ok = True
        log.info("worker started", extra={"worker": self.name, "group": self.group_id})
        try:
            while not stop.is_set():
                self.health.beat()
                if self.outbox_to_flush:
                    await self.settle()  # none of our own rows in flight while reading the outbox
                    await self._retry(self._flush_outbox, "outbox")
                batches = await self._next_batches(consumer)
                if batches:
                    task = asyncio.create_task(self._process(consumer, batches))
                    for tp in batches:
                        self._in_flight[tp] = task
                elif not self._in_flight and self.outbox.has_published_rows:
                    await self._retry(self.outbox.delete_published, "postgresql")
        finally:
            # Batches in flight finish before the worker leaves the group; a second cancellation
            # (the shutdown grace ran out) abandons them, and their records are redelivered.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self.settle()
                await self.outbox.delete_published()
            for task in set(self._in_flight.values()):
                task.cancel()
            await consumer.stop()  # leaves the group
            self.health.kafka_ok = False
            self.health.revoked()
            log.info("worker stopped", extra={"worker": self.name})

    async def _next_batches(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records of partitions with no batch in flight, as soon as they are fetched or a batch finishes."""
        self._reap()
        timeout_ms = self.settings.batch_timeout_ms * 4 or 100
        tasks = set(self._in_flight.values())
        if not tasks:
            return await self._fetch(consumer, (), timeout_ms)
        free = [tp for tp in consumer.assignment() if tp not in self._in_flight]
        if not free or len(tasks) >= self.settings.batch_max_in_flight:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            self._reap()
            return {}
        fetching = asyncio.create_task(self._fetch(consumer, free, timeout_ms))
        try:
            await asyncio.wait({fetching, *tasks}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            fetching.cancel()
            raise
        if not fetching.done():
            # A batch finished first: its partition is free again. Records already drained are
            # kept (cancelling getmany never loses them: it drains only when it returns).
            fetching.cancel()
            await asyncio.wait({fetching})
        self._reap()
        return {} if fetching.cancelled() else fetching.result()

    def _reap(self) -> None:
        """Forget finished batches; a failure that was not transient ends the worker, as it would inline."""
        for tp, task in list(self._in_flight.items()):
            if task.done():
                del self._in_flight[tp]
                task.result()

    async def settle(self) -> None:
        """Wait until every batch in flight is applied and published, and its offsets committed."""
        tasks = set(self._in_flight.values())
        if tasks:
            await asyncio.wait(tasks)
        self._reap()
        if self._committer is not None:
            if not self._committer.done():  # a finished one would leave the event set for the next
                self._commit_now.set()
            await self._committer

    async def _fetch(self, consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition],
                     timeout_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        async def fetch() -> dict[TopicPartition, list[ConsumerRecord]]:
            batches: dict[TopicPartition, list[ConsumerRecord]] = await consumer.getmany(
                *partitions, timeout_ms=timeout_ms, max_records=self.settings.batch_max_records)
            return batches

        def failed(error: BaseException, delay: float) -> None:
            self.health.kafka_ok = False  # until the process's broker check sees it answer again
            self.metrics.retries.labels(worker=self.name, dependency="kafka").inc()
            log.warning("fetch failed, retrying",
                        extra={"worker": self.name, "error": repr(error), "backoff_s": delay})

        try:
            # The one retry loop, with its backoff; once the worker is stopping, a failure ends it instead.
            fetched, _ = await retry(fetch, (KafkaError,), self.settings.backoff, failed, self._stop)
        except KafkaError:
            return {}
        return fetched

    async def _process(self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        started = time.perf_counter()
        records = [record for batch in batches.values() for record in batch]
        partitions = sorted(tp.partition for tp in batches)
        rejected: set[tuple[int, int]] = set()  # (partition, offset) of the records dead-lettered alone
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                # An earlier attempt may have committed some chunks of a split batch before a transient
                # failure: their rows are published first, so nothing this attempt publishes overtakes them.
                await self.outbox.publish_left_over(partitions)
            await self._apply(records, rejected)

        if not await self._retry(attempt, "postgresql"):
            # The retry published what earlier attempts committed before its own records; the flush
            # before the next fetch looks once more, for rows committed as a connection broke.
            self.outbox_to_flush.update(self.assigned)
        # The partitions are free for their next batch now; their offsets are committed behind it.
        for tp, batch in batches.items():
            self._offsets_to_commit[tp] = batch[-1].offset + 1
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending(consumer))
        self.metrics.batch_seconds.labels(worker=self.name).observe(time.perf_counter() - started)

    async def _apply(self, records: list[ConsumerRecord], rejected: set[tuple[int, int]]) -> None:
        committed = await isolate(records, self._commit, functools.partial(self._reject, rejected))
        self.health.database_ok = True
        outgoing = [record for _, part in committed for record in part]
        await self._retry(functools.partial(self._publish, outgoing), "kafka")
        self.outbox.mark_published([row_id for ids, _ in committed for row_id in ids])
        # Counted once applied and published, so a retried batch is not counted twice.
        self.metrics.records_consumed.labels(worker=self.name, topic=self.source_topic).inc(len(records))

    async def _commit(self, records: Sequence[ConsumerRecord]) -> Committed:
        """Apply records in one unit of work: all of them, or none."""
        return await self._in_unit_of_work({record.partition for record in records},
                                           functools.partial(self.handler.handle, records=records))

    async def _in_unit_of_work(self, partitions: set[int], produce: Produce) -> Committed:
        """Run ``produce`` in one unit of work of these source partitions and commit what it returns to the
        outbox (deleting the rows published since the last one); returns the new row ids and the records."""
        with self.outbox.published_to_delete() as published:
            async with UnitOfWork(self.pool, self.source_topic, partitions, self.settings.kafka_max_record_bytes,
                                  lock_on_enter=not self.lock_in_first_read) as uow:
                outgoing = await produce(uow)
                return [(await uow.commit(outgoing, published), outgoing)]

    async def _reject(self, rejected: set[tuple[int, int]], record: ConsumerRecord,
                      error: BaseException) -> Committed:
        """Dead-letter the one record that a batch could not be applied with, and commit the letter (once: a
        retried batch finds it committed and published by the retry's start)."""
        if (record.partition, record.offset) in rejected:
            return []
        letter = poison_letter(record, error, self.name, self.metrics)

        async def letter_only(_: BatchStore) -> list[OutgoingRecord]:
            return [letter]

        committed = await self._in_unit_of_work({record.partition}, letter_only)
        rejected.add((record.partition, record.offset))
        return committed

    async def _flush_outbox(self) -> None:
        partitions = sorted(self.outbox_to_flush)
        left_over = await self.outbox.publish_left_over(partitions)
        if left_over:
            log.info("published outbox left by an earlier owner",
                     extra={"worker": self.name, "records": len(left_over)})
            self.metrics.outbox_recovered.labels(worker=self.name).inc(len(left_over))
            self._observe_latency(left_over)
        self.outbox_to_flush.difference_update(partitions)

    async def _publish(self, records: list[OutgoingRecord]) -> None:
        await self.outbox.publish(records)
        self._observe_latency(records)

    def _observe_latency(self, records: Sequence[OutgoingRecord]) -> None:
        now = time.time()
        for record in records:
            if record.event_time is not None:
                self.metrics.end_to_end_seconds.observe(max(0.0, now - record.event_time))

    async def _commit_pending(self, consumer: AIOKafkaConsumer) -> None:
        while self._offsets_to_commit:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._commit_now.wait(), self.settings.kafka_commit_interval_ms / 1000)
            self._commit_now.clear()
            offsets, self._offsets_to_commit = self._offsets_to_commit, {}
            try:
                await consumer.commit(offsets)
            except KafkaError as error:
                # The effects are applied and deduplicated by id: the next owner re-reads and skips them.
                log.warning("offset commit failed", extra={"worker": self.name, "error": repr(error)})

    async def _retry(self, action: Callable[[], Awaitable[object]], dependency: str) -> bool:
        """Retry a transient failure with backoff until it succeeds; shutdown cancels it.

        Returns True when the first attempt succeeded.
        """
        return await retry_dependency(self.context, action, dependency)
