"""The state worker's batch in PostgreSQL (one read through `state_batch_read`, migration 013, and one write
with the outbox rows, issue 24) against the specification: the same handler over the in-memory store of the
unit tests. Generated sequences of batches must give the same states, history, processed ids, schedules and
records to publish."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import SuspensionCommand, encode
from tests.support import create_database
from tests.unit.test_batch_handlers import MemoryStore
from tests.unit.test_properties import commands
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings
from workers.runtime.db.migrate import migrate
from workers.runtime.db.unit_of_work import UnitOfWork
from workers.runtime.metrics import Metrics
from workers.runtime.publishing import OutgoingRecord
from workers.state.handler import StateHandler

pytestmark = pytest.mark.integration

TIMES = ("updated_at", "occurred_at", "failed_at")  # the moment each run applies a batch: not the same in both


def own_ids(command: SuspensionCommand, run: str) -> SuspensionCommand:
    """The command with customer, command and schedule ids of this example alone (the database is shared)."""
    update: dict[str, Any] = {"customer_id": f"{run}-{command.customer_id}", "command_id": f"{run}-{command.command_id}"}
    if command.schedule_id is not None:
        update["schedule_id"] = f"{run}-{command.schedule_id}"
    return command.model_copy(update=update)


def as_records(batch: list[SuspensionCommand], first_offset: int) -> list[ConsumerRecord]:
    out = []
    for offset, command in enumerate(batch, first_offset):
        key, value = command.customer_id.encode(), encode(command)
        out.append(ConsumerRecord(SUSPENSION_COMMANDS.name, 0, offset, 0, 0, key, value, None, len(key), len(value), ()))
    return out


def published(records: list[OutgoingRecord]) -> list[tuple[str, bytes | None, str | None, dict[str, Any]]]:
    """What a batch publishes, without the moment it was applied."""
    def value(record: OutgoingRecord) -> dict[str, Any]:
        fields = orjson.loads(record.value)
        return {name: held for name, held in fields.items() if name not in TIMES} if isinstance(fields, dict) else fields
    return [(r.topic, r.key, r.record_id, value(r)) for r in records]


async def stored(conn: asyncpg.Connection, run: str) -> dict[str, Any]:
    """The example's rows, without the moments they were applied."""
    like = f"{run}-%"
    states = await conn.fetch(
        "SELECT customer_id, space_id, suspended, reasons, suspended_at, lifted_at, version, last_command_id, "
        "scheduled::text FROM customer_state WHERE customer_id LIKE $1 ORDER BY customer_id", like)
    history = await conn.fetch(
        "SELECT command_id, customer_id, outcome, version_after, suspended_after, schedule_id, source_offset "
        "FROM command_history WHERE customer_id LIKE $1 ORDER BY id", like)
    processed = await conn.fetch(
        "SELECT command_id, outcome FROM processed_commands WHERE command_id LIKE $1 ORDER BY command_id", like)
    schedules = await conn.fetch(
        "SELECT schedule_id, customer_id, action, at, status, updated_by_command FROM schedules "
        "WHERE customer_id LIKE $1 ORDER BY schedule_id", like)
    return {"states": [(*row.values(),)[:-1] + (orjson.loads(row["scheduled"]),) for row in states],
            "history": [tuple(row.values()) for row in history],
            "processed": [tuple(row.values()) for row in processed],
            "schedules": [tuple(row.values()) for row in schedules]}


def remembered(store: MemoryStore) -> dict[str, Any]:
    """The in-memory store's rows, as ``stored`` reads PostgreSQL's."""
    def scheduled(entries: Any) -> list[dict[str, Any]]:
        return orjson.loads(orjson.dumps(list(entries)))

    return {"states": [(s.customer_id, s.space_id, s.suspended, [str(r) for r in s.reasons], s.suspended_at,
                        s.lifted_at, s.version, s.last_command_id, scheduled(s.scheduled))
                       for _, s in sorted(store.states.items())],
            "history": [(h.command_id, h.customer_id, h.outcome, h.version_after, h.suspended_after, h.schedule_id,
                         h.source_offset) for h in store.history],
            "processed": sorted(store.processed.items()),
            "schedules": [(r.schedule_id, r.customer_id, r.action, r.at, r.status, r.updated_by_command)
                          for _, r in sorted(store.schedules.items())]}


async def both_ways(url: str, batches: list[list[SuspensionCommand]]) -> None:
    run = uuid.uuid4().hex[:10]
    handler, memory = StateHandler("state", Metrics()), MemoryStore()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        offset = 0
        for batch in batches:
            records = as_records([own_ids(command, run) for command in batch], offset)
            offset += len(records)
            expected = await handler.handle(memory, records)
            async with UnitOfWork(pool, SUSPENSION_COMMANDS.name, [0], 1_000_000, lock_on_enter=False) as uow:
                outgoing = await handler.handle(uow, records)
                await uow.commit(outgoing, ())
            assert published(outgoing) == published(expected)
        async with pool.acquire() as conn:
            in_postgres = await stored(conn, run)
        assert in_postgres == remembered(memory)
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def database_url(settings: Settings) -> str:
    async def made() -> str:
        url = await create_database(settings, "batchsql")
        await migrate(url)
        return url
    return asyncio.run(made())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(batches=st.lists(st.lists(commands(), min_size=1, max_size=12), min_size=1, max_size=4))
def test_the_batch_in_postgresql_matches_the_in_memory_specification(database_url: str,
                                                                      batches: list[list[SuspensionCommand]]) -> None:
    asyncio.run(both_ways(database_url, batches))

