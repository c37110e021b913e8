"""Two owners apply batches of one partition at once (a consumer that lost its partition but does not
know it yet): the second waits for the first, then finds what the first applied and does none of it again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from suspensions import queries
from tests.integration import builders
from tests.support import uid, wait_until
from topics import INVOICE_JOBS, SUSPENSION_COMMANDS
from workers.billing.handler import BillingHandler
from workers.runtime.config import Settings
from workers.runtime.metrics import Metrics
from workers.runtime.publishing import OutgoingRecord
from workers.state.handler import StateHandler

pytestmark = pytest.mark.integration


def as_records(values: list[dict[str, object]], topic: str = SUSPENSION_COMMANDS.name) -> list[ConsumerRecord]:
    """Consecutive records of partition 0, keyed by customer as upstream keys them."""
    records = []
    for offset, item in enumerate(values):
        key, value = str(item["customer_id"]).encode(), orjson.dumps(item)
        records.append(ConsumerRecord(topic, 0, offset, 0, 0, key, value, None, len(key), len(value), ()))
    return records


@dataclass
class Raced:
    first: list[OutgoingRecord]  # what each owner's transaction would publish
    second: list[OutgoingRecord]


async def two_owners(db_url: str, handler: StateHandler | BillingHandler, first_batch: list[ConsumerRecord],
                     second_batch: list[ConsumerRecord]) -> Raced:
    """The first owner applies its batch in a transaction it keeps open; the second applies its own
    meanwhile, is seen waiting for a lock, and finishes once the first commits."""
    first = await asyncpg.connect(db_url)
    second = await asyncpg.connect(db_url)
    try:
        first_tx = first.transaction()
        await first_tx.start()
        first_out = await handler.handle(first, first_batch)

        async def second_owner() -> list[OutgoingRecord]:
            async with second.transaction():
                return await handler.handle(second, second_batch)

        racing = asyncio.create_task(second_owner())

        async def second_waits() -> bool:
            return bool(await first.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
                second.get_server_pid()))

        await wait_until(second_waits, 10, "the second owner to wait for the first")
        await first_tx.commit()
        return Raced(first_out, await asyncio.wait_for(racing, 10))
    finally:
        await first.close()
        await second.close()


async def history_of(db: asyncpg.Pool, customer: str) -> list[str]:
    rows = await db.fetch("SELECT command_id FROM command_history WHERE customer_id = $1 ORDER BY id", customer)
    return [row["command_id"] for row in rows]


async def test_a_second_owner_waiting_on_the_lock_applies_nothing_again(settings: Settings, db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("owners")
    handler = StateHandler("state", Metrics())
    signup = builders.command(customer, space, reason="signup")
    async with db.acquire() as conn, conn.transaction():  # the customer is known: there is a row to lock
        await handler.handle(conn, as_records([signup]))
    batch = [builders.command(customer, space, reason="plan"), builders.command(customer, space, action="lift")]

    await two_owners(settings.database_url, handler, as_records(batch), as_records(batch))

    async with db.acquire() as conn:
        state = await queries.customer_state(conn, customer)
    assert state is not None and not state.suspended and state.version == 3  # suspend, plan, lift
    # Nothing applied twice, not even as a no-op.
    assert await history_of(db, customer) == [signup["command_id"], *(command["command_id"] for command in batch)]


async def test_a_second_owner_of_a_customer_with_no_row_yet_waits_and_applies_only_the_rest(
        settings: Settings, db: asyncpg.Pool) -> None:
    """No row to lock: the second owner waits on the partition instead, then applies only what is new."""
    space, customer = uid("space"), uid("owners")
    signup = builders.command(customer, space, reason="signup")
    lift = builders.command(customer, space, action="lift")

    # The first owner writes the customer's first row; the second has the same record and the next one.
    await two_owners(settings.database_url, StateHandler("state", Metrics()), as_records([signup]),
                     as_records([signup, lift]))

    async with db.acquire() as conn:
        state = await queries.customer_state(conn, customer)
    assert state is not None and not state.suspended and state.version == 2  # suspended, then lifted
    assert await history_of(db, customer) == [signup["command_id"], lift["command_id"]]


async def test_a_second_billing_owner_waits_and_publishes_no_decision_again(settings: Settings,
                                                                           db: asyncpg.Pool) -> None:
    """The first owner's decision stands, and the second publishes nothing for that job."""
    job = as_records([builders.invoice_job(uid("owners"), uid("space"))], INVOICE_JOBS.name)
    job_id = orjson.loads(job[0].value)["job_id"]

    raced = await two_owners(settings.database_url, BillingHandler("billing", Metrics()), job, job)

    assert [record.record_id for record in raced.first] == [job_id]
    assert raced.second == []
    assert await db.fetchval("SELECT count(*) FROM invoice_decisions WHERE job_id = $1", job_id) == 1
