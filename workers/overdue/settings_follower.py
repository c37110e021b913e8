"""Each space's overdue rule, from the compacted `settings.overdue` into PostgreSQL.

Every overdue worker reads the whole topic (no group) and writes what it reads: the same rows, last
write wins by `updated_at`, so one instance or several, reading again from the beginning or not, the
table ends as the topic. The firer, the handler, the CLI and the API read the table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from models import DecodeError, OverdueSetting, decode
from topics import SETTINGS_OVERDUE
from workers.runtime.compacted import read_compacted
from workers.runtime.context import WorkerContext
from workers.runtime.db import invoices
from workers.runtime.db.invoices import RuleSetting
from workers.runtime.db.pool import TRANSIENT_DB_ERRORS
from workers.runtime.deadletters import dead_letter
from workers.runtime.publishing import publish_all
from workers.runtime.retry import retry

log = logging.getLogger(__name__)

SETTINGS_FETCH_MAX_WAIT_MS = 100


def rule_setting(key: bytes | None, value: bytes) -> RuleSetting:
    """The stored rule of a `settings.overdue` record; DecodeError for bad input."""
    setting = decode(OverdueSetting, value)
    key_text = None if key is None else key.decode("utf-8", errors="replace")
    if key_text != setting.space_id:
        raise DecodeError(f"record key {key_text!r} does not match its space_id '{setting.space_id}'")
    return RuleSetting(setting.space_id, setting.suspend_after_days, setting.lift_when_paid,
                       setting.missed_invoices, setting.updated_at)


class OverdueSettingsFollower:
    def __init__(self, context: WorkerContext) -> None:
        self._context = context
        self._stop = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        settings = self._context.settings
        await read_compacted(settings, [SETTINGS_OVERDUE.name], self._apply, follow=True,
                             fetch_max_wait_ms=max(settings.kafka_fetch_max_wait_ms, SETTINGS_FETCH_MAX_WAIT_MS))

    async def _apply(self, record: ConsumerRecord) -> None:
        context = self._context
        if record.value is None:  # a tombstone: the rule is off from the record's broker time
            if record.key is not None:
                space = record.key.decode("utf-8", errors="replace")
                moment = datetime.fromtimestamp(record.timestamp / 1000, UTC)
                await self._store(lambda conn: invoices.remove_setting(conn, space, moment))
            return
        try:
            setting = rule_setting(record.key, record.value)
        except DecodeError as error:
            letter = dead_letter(record, str(error), context.name, context.metrics)
            await retry(lambda: publish_all(context.producer, [letter]), (KafkaError,), context.settings.backoff,
                        self._failed, self._stop)
            return
        await self._store(lambda conn: invoices.store_setting(conn, setting))
        context.metrics.settings_records.labels(topic=record.topic).inc()

    async def _store(self, write: Callable[[asyncpg.Connection], Awaitable[None]]) -> None:
        """One write, retried while PostgreSQL is away (the follower never ends on an outage)."""
        async def once() -> None:
            async with self._context.database.acquire() as conn:
                await write(conn)

        await retry(once, TRANSIENT_DB_ERRORS, self._context.settings.backoff, self._failed, self._stop)

    @staticmethod
    def _failed(error: BaseException, delay: float) -> None:
        log.warning("following settings.overdue failed, retrying", extra={"error": repr(error), "backoff_s": delay})
