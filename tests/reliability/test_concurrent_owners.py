"""Two owners apply the same batch at once (a consumer that lost its partition but does not know it
yet): the second waits for the first's locks and then finds every command already processed."""

from __future__ import annotations

import asyncio

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


async def waits_for_a_lock(observer: asyncpg.Connection, waiting: asyncpg.Connection) -> bool:
    return bool(await observer.fetchval(
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
        waiting.get_server_pid()))


async def test_a_second_owner_waiting_on_the_lock_applies_nothing_again(settings: Settings) -> None:
    space, customer = uid("space"), uid("owners")
    first = await asyncpg.connect(settings.database_url)
    second = await asyncpg.connect(settings.database_url)
    try:
        handler = StateHandler("state", Metrics())
        async with first.transaction():  # the customer is known: there is a row to lock
            await handler.handle(first, as_records([builders.command(customer, space, reason="signup")]))
        batch = as_records([builders.command(customer, space, reason="plan"),
                            builders.command(customer, space, action="lift")])

        first_tx = first.transaction()
        await first_tx.start()
        await handler.handle(first, batch)  # holds the customer's row lock until it commits

        async def second_owner() -> None:
            async with second.transaction():
                await handler.handle(second, batch)

        racing = asyncio.create_task(second_owner())

        await wait_until(lambda: waits_for_a_lock(first, second), 10, "the second owner to wait for the row lock")
        await first_tx.commit()
        await asyncio.wait_for(racing, 10)

        state = await queries.customer_state(first, customer)
        assert state is not None and not state.suspended and state.version == 3  # suspend, plan, lift
        history = await first.fetch("SELECT command_id FROM command_history WHERE customer_id = $1", customer)
        assert len(history) == 3  # nothing applied twice, not even as a no-op
    finally:
        await first.close()
        await second.close()


async def test_a_second_owner_of_a_customer_with_no_row_yet_waits_and_applies_only_the_rest(
        settings: Settings) -> None:
    """No row to lock: the second owner waits on the partition instead, then applies only what is new."""
    space, customer = uid("space"), uid("owners")
    signup = builders.command(customer, space, reason="signup")
    lift = builders.command(customer, space, action="lift")
    first = await asyncpg.connect(settings.database_url)
    second = await asyncpg.connect(settings.database_url)
    try:
        handler = StateHandler("state", Metrics())
        first_tx = first.transaction()
        await first_tx.start()
        await handler.handle(first, as_records([signup]))  # the customer's first row, not committed yet

        async def second_owner() -> None:  # the same record, and the next one of the partition
            async with second.transaction():
                await handler.handle(second, as_records([signup, lift]))

        racing = asyncio.create_task(second_owner())

        await wait_until(lambda: waits_for_a_lock(first, second), 10, "the second owner to wait for the first")
        await first_tx.commit()
        await asyncio.wait_for(racing, 10)

        state = await queries.customer_state(first, customer)
        assert state is not None and not state.suspended and state.version == 2  # suspended, then lifted
        history = await first.fetch("SELECT command_id FROM command_history WHERE customer_id = $1 ORDER BY id",
                                    customer)
        assert [row["command_id"] for row in history] == [signup["command_id"], lift["command_id"]]
    finally:
        await first.close()
        await second.close()


async def test_a_second_billing_owner_waits_and_publishes_no_decision_again(settings: Settings) -> None:
    """The first owner's decision stands, and the second publishes nothing for that job."""
    job = builders.invoice_job(uid("owners"), uid("space"))
    first = await asyncpg.connect(settings.database_url)
    second = await asyncpg.connect(settings.database_url)
    try:
        handler = BillingHandler("billing", Metrics())
        first_tx = first.transaction()
        await first_tx.start()
        decided = await handler.handle(first, as_records([job], INVOICE_JOBS.name))
        assert [record.record_id for record in decided] == [job["job_id"]]

        async def second_owner() -> list[OutgoingRecord]:
            async with second.transaction():
                return await handler.handle(second, as_records([job], INVOICE_JOBS.name))

        racing = asyncio.create_task(second_owner())
        await wait_until(lambda: waits_for_a_lock(first, second), 10, "the second owner to wait for the first")
        await first_tx.commit()
        assert await asyncio.wait_for(racing, 10) == []
        assert await first.fetchval("SELECT count(*) FROM invoice_decisions WHERE job_id = $1", job["job_id"]) == 1
    finally:
        await first.close()
        await second.close()
