"""Sends due deliveries: the webhooks worker that holds a partition of `suspension.events` sends the
deliveries of its events (``source_partition``), as the state worker fires the schedules of its own.

Each poll claims due deliveries in PostgreSQL (``store.claim_due``): per endpoint and customer only the
oldest pending one, so a customer's events arrive in order and a later one waits while an earlier one is
retried; a claim leases the row (its next attempt moves ahead), so two dispatchers (a rebalance, a
partition owned twice for a moment) never send it at once, and one that dies leaves it to be sent again
when the lease ends, with the same ``webhook-id``. At most ``webhooks_max_in_flight`` attempts run at once,
``webhooks_max_in_flight_per_endpoint`` of one endpoint: a slow or failing endpoint holds only its own.
Every attempt and what follows it (delivered, retried when, given up, endpoint disabled) is recorded in
one transaction; a recording PostgreSQL refuses is retried until it is made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from workers.runtime.context import WorkerContext
from workers.runtime.db.pool import TRANSIENT_DB_ERRORS
from workers.runtime.retry import retry
from workers.webhooks import store
from workers.webhooks.delivery import Result, Schedule, Sender

log = logging.getLogger(__name__)

GAUGE_EVERY_S = 5.0
RECORD_BATCH = 1_000


class Dispatcher:
    def __init__(self, context: WorkerContext, partitions: Callable[[], set[int]]) -> None:
        settings = context.settings
        self._context = context
        self._partitions = partitions
        self._metrics = context.metrics
        self._schedule = Schedule(settings.webhooks_initial_backoff_s, settings.webhooks_max_backoff_s,
                                  settings.webhooks_retry_for, settings.webhooks_disable_after)
        # An attempt may wait for a free slot of its endpoint (two attempts' time), then take its own.
        self._lease_s = 3 * settings.webhooks_timeout_s + 2.0
        self._tasks: dict[int, asyncio.Task[None]] = {}  # by delivery id
        self._busy: Counter[str] = Counter()  # attempts in flight or waiting, by endpoint
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._wake = asyncio.Event()
        self._results: list[tuple[asyncpg.Record, Result, datetime]] = []  # sent, not recorded yet
        self._results_ready = asyncio.Event()
        self._gauged: set[str] = set()
        self._sender: Sender | None = None

    async def run(self, stop: asyncio.Event) -> None:
        settings = self._context.settings
        interval = settings.webhooks_poll_interval_ms / 1000

        def failed(error: BaseException, delay: float) -> None:
            log.warning("claiming webhook deliveries failed, retrying",
                        extra={"worker": self._context.name, "error": repr(error), "backoff_s": delay})

        async with Sender(settings.webhooks_timeout_s, settings.webhooks_allow_private,
                          settings.webhooks_max_in_flight) as sender:
            self._sender = sender
            sent_all = asyncio.Event()
            recorder = asyncio.create_task(self._recorder(sent_all), name="webhooks-recorder")
            upkeep = asyncio.create_task(self._upkeep(stop), name="webhooks-upkeep")
            try:
                while not stop.is_set():
                    # Cleared before looking: an attempt that ends while we look wakes the wait below.
                    self._wake.clear()
                    try:
                        claimed, _ = await retry(self._claim, TRANSIENT_DB_ERRORS, settings.backoff, failed, stop)
                    except TRANSIENT_DB_ERRORS:
                        return  # failed while stopping
                    if claimed:
                        continue  # more may be due at once
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait(stop), interval)
            finally:
                upkeep.cancel()
                # Attempts in flight finish (each is bounded by the timeout) and are recorded; a second
                # cancellation abandons them, and their leases end: they are sent again, same webhook-id.
                if self._tasks:
                    await asyncio.wait(set(self._tasks.values()))
                sent_all.set()  # the recorder records what is left, then ends
                await asyncio.gather(upkeep, recorder, return_exceptions=True)

    async def _wait(self, stop: asyncio.Event, wake: asyncio.Event | None = None) -> None:
        waiting = {asyncio.create_task(stop.wait()), asyncio.create_task((wake or self._wake).wait())}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiting:
                task.cancel()

    async def _claim(self) -> int:
        settings = self._context.settings
        room = settings.webhooks_max_in_flight - len(self._tasks)
        if room <= 0:
            return 0
        # An endpoint's deliveries are looked for once no more than its slots' worth is in hand, up to twice as
        # many: they wait in hand for a free slot, so its slots stay busy while the dispatcher looks for more,
        # and it looks about once per two slots' worth sent rather than after every attempt.
        cap = settings.webhooks_max_in_flight_per_endpoint
        full = [endpoint for endpoint, count in self._busy.items() if count > cap]
        async with self._context.database.acquire() as conn:
            rows = await store.claim_due(conn, sorted(self._partitions()), full, room, 2 * cap, self._lease_s)
        started = 0
        for row in rows:
            if row["delivery_id"] in self._tasks:
                continue  # its lease ended while it waited here: it is still ours
            self._busy[row["endpoint_id"]] += 1
            task = asyncio.create_task(self._deliver(row))
            self._tasks[row["delivery_id"]] = task
            started += 1
        return started

    async def _deliver(self, row: asyncpg.Record) -> None:
        endpoint_id = row["endpoint_id"]
        slot = self._slots.setdefault(endpoint_id, asyncio.Semaphore(
            self._context.settings.webhooks_max_in_flight_per_endpoint))
        try:
            async with slot:
                assert self._sender is not None
                now = datetime.now(UTC)
                signing = [row["secret"]]
                if row["previous_secret"] and row["previous_secret_until"] and row["previous_secret_until"] > now:
                    signing.append(row["previous_secret"])
                result = await self._sender.send(row["url"], row["event_id"], bytes(row["body"]), signing)
            self._results.append((row, result, datetime.now(UTC)))
            self._results_ready.set()
        except Exception:  # noqa: BLE001 - one delivery's failure never stops the others; its lease ends
            log.exception("a webhook delivery failed unexpectedly",
                          extra={"worker": self._context.name, "endpoint_id": endpoint_id})
        finally:
            self._tasks.pop(row["delivery_id"], None)
            self._busy[endpoint_id] -= 1
            if self._busy[endpoint_id] <= 0:
                del self._busy[endpoint_id]
                self._slots.pop(endpoint_id, None)
            self._wake.set()

    async def _recorder(self, sent_all: asyncio.Event) -> None:
        """Records the attempts that finished, together (one transaction for all that finished meanwhile);
        once ``sent_all`` is set, records what is left and ends."""
        while True:
            if not self._results:
                if sent_all.is_set():
                    return
                self._results_ready.clear()
                await self._wait(sent_all, self._results_ready)
                continue
            batch, self._results = self._results[:RECORD_BATCH], self._results[RECORD_BATCH:]
            await self._record(batch)
            self._wake.set()  # the next deliveries of these customers are due now

    async def _record(self, batch: list[tuple[asyncpg.Record, Result, datetime]]) -> None:
        outcomes = []
        for row, result, now in batch:
            number = row["attempts"] + 1
            next_at = None if result.delivered else self._schedule.next_attempt(
                number, result.retry_after_s, row["created_at"], now)
            attempt = store.Attempt(row["delivery_id"], row["endpoint_id"], row["customer_id"], number, now,
                                    result.status_code, result.latency_s * 1000, result.error, result.response)
            outcomes.append(store.Outcome(attempt, result.delivered, next_at,
                                          self._schedule.disable_reason(result, row["failing_since"], now)))

        async def write() -> set[int]:
            async with self._context.database.acquire() as conn:
                return await store.record_attempts(conn, outcomes)

        def failed(error: BaseException, delay: float) -> None:
            log.warning("recording webhook attempts failed, retrying",
                        extra={"worker": self._context.name, "error": repr(error), "backoff_s": delay})

        # Until it is recorded: the answers are in hand (a crash instead sends them again, same webhook-id).
        recorded, _ = await retry(write, TRANSIENT_DB_ERRORS, self._context.settings.backoff, failed)
        metrics = self._metrics
        for (row, result, _), outcome in zip(batch, outcomes, strict=True):
            metrics.webhook_attempts.labels(outcome=result.outcome).inc()
            metrics.webhook_attempt_seconds.observe(result.latency_s)
            if row["delivery_id"] not in recorded:
                continue
            if result.delivered:
                metrics.webhook_deliveries.labels(outcome="delivered").inc()
            elif outcome.next_attempt_at is None:
                metrics.webhook_deliveries.labels(outcome="gave_up").inc()
                log.warning("a webhook delivery was given up", extra={
                    "worker": self._context.name, "endpoint_id": row["endpoint_id"], "event_id": row["event_id"],
                    "attempts": outcome.attempt.attempt})
            if outcome.disable_reason is not None:
                log.warning("a webhook endpoint was disabled", extra={
                    "worker": self._context.name, "endpoint_id": row["endpoint_id"], "reason": outcome.disable_reason})

    async def _upkeep(self, stop: asyncio.Event) -> None:
        """Every few seconds, parked deliveries that nothing precedes any more are made due (a rare race of
        two transactions) and the oldest pending delivery's age per endpoint measured (the delivery log's
        retention is the worker's ``Pruner``)."""
        while not stop.is_set():
            try:
                await self._gauge()
            except TRANSIENT_DB_ERRORS as error:
                log.warning("webhooks upkeep failed", extra={"worker": self._context.name, "error": repr(error)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), GAUGE_EVERY_S)

    async def _gauge(self) -> None:
        async with self._context.database.acquire() as conn:
            if await store.promote_parked(conn, sorted(self._partitions())):
                self._wake.set()
            oldest = await store.oldest_pending(conn, sorted(self._partitions()))
        now = datetime.now(UTC)
        gauge = self._metrics.webhook_oldest_pending
        for endpoint_id, created_at in oldest.items():
            gauge.labels(endpoint=endpoint_id).set(max(0.0, (now - created_at).total_seconds()))
        for endpoint_id in self._gauged - oldest.keys():
            gauge.remove(endpoint_id)
        self._gauged = set(oldest)

