"""The consume loop shared by the state and billing workers.

One batch from ``getmany`` is handled in one PostgreSQL transaction that also
writes every record to publish into the outbox. After the commit the outbox
rows are published, and only once the broker acknowledged them are the Kafka
offsets committed; published rows are deleted in the next batch's transaction,
or when the worker is idle. Batches of different partitions are in flight at
the same time (``batch_max_in_flight``), never two of the same partition.
A crash anywhere leaves either an uncommitted transaction (the batch is
redelivered and re-applied) or committed outbox rows (published by whoever owns
the partition next, before it consumes). Handlers deduplicate by ids, so a
redelivered batch has no second effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from suspensions.config import Settings
from suspensions.db import repository
from suspensions.db.repository import OutboxRecord
from suspensions.health import WorkerHealth
from suspensions.kafka import make_consumer
from suspensions.metrics import Metrics
from suspensions.publish import Outgoing, publish_all

log = logging.getLogger(__name__)

TRANSIENT_DB_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    # A connection left in a broken protocol state by an outage; the pool replaces it (see _retry).
    asyncpg.exceptions.InternalClientError,
)


class BatchHandler(Protocol):
    worker: str
    source_topic: str

    async def handle(self, conn: asyncpg.Connection, records: Sequence[ConsumerRecord]) -> list[OutboxRecord]:
        """Apply the batch inside the open transaction; return what to publish, in order."""


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: BatchWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Batches in flight finish (applied, published, offsets committed) before partitions go.
        await self._worker.settle()
        self._worker.health.revoked()
        log.info("partitions revoked", extra={"worker": self._worker.handler.worker,
                                              "partitions": sorted(tp.partition for tp in revoked)})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._worker.health.assigned(len(assigned))
        self._worker.assigned = {tp.partition for tp in assigned}
        self._worker.outbox_to_flush.update(self._worker.assigned)
        log.info("partitions assigned", extra={"worker": self._worker.handler.worker,
                                               "partitions": sorted(tp.partition for tp in assigned)})


class BatchWorker:
    def __init__(
        self,
        settings: Settings,
        group_id: str,
        handler: BatchHandler,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        metrics: Metrics,
        health: WorkerHealth,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.handler = handler
        self.pool = pool
        self.producer = producer
        self.metrics = metrics
        self.health = health
        self.assigned: set[int] = set()
        self.outbox_to_flush: set[int] = set()
        # Outbox rows already published, deleted in the next batch's transaction (or when idle):
        # one round trip less per batch; a crash before that only re-publishes them.
        self._published_ids: list[int] = []
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

    async def run(self, stop: asyncio.Event) -> None:
        consumer = make_consumer(
            self.settings, self.group_id, max_poll_records=self.settings.batch_max_records
        )
        consumer.subscribe([self.handler.source_topic], listener=_Rebalance(self))
        await self._retry(consumer.start, "kafka")
        self.health.kafka_ok = True
        log.info("worker started", extra={"worker": self.handler.worker, "group": self.group_id})
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
                elif not self._in_flight and self._published_ids:
                    await self._retry(self._delete_published, "postgresql")
        finally:
            # Batches in flight finish before the worker leaves the group; a second cancellation
            # (the shutdown grace ran out) abandons them, and their records are redelivered.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self.settle()
                await self._delete_published()
            for task in set(self._in_flight.values()):
                task.cancel()
            await consumer.stop()  # leaves the group
            self.health.kafka_ok = False
            self.health.revoked()
            log.info("worker stopped", extra={"worker": self.handler.worker})

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
        try:
            batches = await consumer.getmany(
                *partitions, timeout_ms=timeout_ms, max_records=self.settings.batch_max_records
            )
            return batches
        except KafkaError as error:
            self.health.kafka_ok = False
            log.warning("fetch failed, retrying", extra={"worker": self.handler.worker, "error": repr(error)})
            await asyncio.sleep(self.settings.retry_initial_backoff_s)
            return {}

    async def _process(self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        started = time.perf_counter()
        records = [record for batch in batches.values() for record in batch]
        if not await self._retry(functools.partial(self._apply, records), "postgresql"):
            # A failed attempt may have committed before its connection broke: its outbox
            # rows are published by the flush, since the retry finds the commands done.
            self.outbox_to_flush.update(self.assigned)
        # The partitions are free for their next batch now; their offsets are committed behind it.
        for tp, batch in batches.items():
            self._offsets_to_commit[tp] = batch[-1].offset + 1
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending(consumer))
        self.metrics.batch_seconds.labels(worker=self.handler.worker).observe(time.perf_counter() - started)

    async def _apply(self, records: list[ConsumerRecord]) -> None:
        with self._published_to_delete() as to_delete:
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    outbox = await self.handler.handle(conn, records)
                    ids = await repository.replace_outbox(conn, self.handler.source_topic, outbox, to_delete)
        self.health.database_ok = True
        await self._retry(functools.partial(self._publish, outbox), "kafka")
        self._published_ids.extend(ids)
        # Counted once applied and published, so a retried batch is not counted twice.
        self.metrics.records_consumed.labels(worker=self.handler.worker, topic=self.handler.source_topic).inc(
            len(records))

    async def _flush_outbox(self) -> None:
        await self._delete_published()  # ours, already published: not again
        partitions = sorted(self.outbox_to_flush)
        async with self.pool.acquire() as conn:
            ids, pending = await repository.pending_outbox(conn, self.handler.source_topic, partitions)
        if ids:
            log.info("publishing outbox left by an earlier owner",
                     extra={"worker": self.handler.worker, "records": len(pending)})
            await self._publish(pending)
            async with self.pool.acquire() as conn:
                await repository.delete_outbox(conn, ids)
        self.outbox_to_flush.difference_update(partitions)

    async def _publish(self, pending: list[OutboxRecord]) -> None:
        if not pending:
            return
        await publish_all(self.producer, (
            Outgoing(record.topic, record.key, record.value, (("record_id", record.record_id.encode()),))
            for record in pending
        ))
        now = time.time()
        for record in pending:
            if record.event_time is not None:
                self.metrics.end_to_end_seconds.observe(max(0.0, now - record.event_time))

    @contextlib.contextmanager
    def _published_to_delete(self) -> Iterator[list[int]]:
        """Take the published outbox ids for deletion; they are put back if the deletion fails."""
        ids, self._published_ids = self._published_ids, []
        try:
            yield ids
        except BaseException:
            self._published_ids.extend(ids)
            raise

    async def _delete_published(self) -> None:
        with self._published_to_delete() as ids:
            if ids:
                async with self.pool.acquire() as conn:
                    await repository.delete_outbox(conn, ids)

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
                log.warning("offset commit failed", extra={"worker": self.handler.worker, "error": repr(error)})

    async def _retry(self, action: Callable[[], Awaitable[object]], dependency: str) -> bool:
        """Retry a transient failure with backoff until it succeeds; shutdown cancels it.

        Returns True when the first attempt succeeded.
        """
        backoff = self.settings.retry_initial_backoff_s
        first_attempt = True
        while True:
            try:
                await action()
                return first_attempt
            except (KafkaError, *TRANSIENT_DB_ERRORS) as error:
                if isinstance(error, KafkaError):
                    self.health.kafka_ok = False
                else:
                    self.health.database_ok = False
                    # Connections that lived through the failure are not trusted again.
                    await self.pool.expire_connections()
                self.metrics.retries.labels(worker=self.handler.worker, dependency=dependency).inc()
                log.warning("transient failure, retrying",
                            extra={"worker": self.handler.worker, "dependency": dependency,
                                   "error": repr(error), "backoff_s": backoff})
                first_attempt = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max_backoff_s)

