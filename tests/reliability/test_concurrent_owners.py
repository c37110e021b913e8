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
from tests.support import consumer_records, uid, wait_until
from topics import INVOICE_JOBS, INVOICE_JOBS_ACCEPTED, SUSPENSION_COMMANDS
from workers.billing.handler import BillingHandler
from workers.runtime.config import Settings
from workers.runtime.db.unit_of_work import UnitOfWork
from workers.runtime.metrics import Metrics
from workers.runtime.outbox import pending_rows
from workers.runtime.publishing import OutgoingRecord
from workers.state.handler import StateHandler

pytestmark = pytest.mark.integration


def as_records(values: list[dict[str, object]], topic: str = SUSPENSION_COMMANDS.name) -> list[ConsumerRecord]:
    return consumer_records(values, topic)


@dataclass
class Raced:
    first: list[OutgoingRecord]  # what each owner's transaction would publish
    second: list[OutgoingRecord]


async def as_owner(pool: asyncpg.Pool, handler: StateHandler | BillingHandler, batch: list[ConsumerRecord],
                   applied: asyncio.Event | None = None, release: asyncio.Event | None = None,
                   lock_on_enter: bool = True) -> list[OutgoingRecord]:
    """Apply a batch of partition 0 in a unit of work, as the batch worker does (with ``applied`` and
    ``release``: say when applied, and commit only once released). ``lock_on_enter=False``: the lock is
    taken by the handler's first read, as the state worker's batches take it."""
    async with UnitOfWork(pool, batch[0].topic, [0], 1_000_000, lock_on_enter=lock_on_enter) as uow:
        records = await handler.handle(uow, batch)
        if applied is not None and release is not None:
            applied.set()
            await release.wait()
        await uow.commit(records, ())
    return records


async def two_owners(db_url: str, handler: StateHandler | BillingHandler, first_batch: list[ConsumerRecord],
                     second_batch: list[ConsumerRecord], lock_on_enter: bool = True) -> Raced:
    """Two owners commit a batch of partition 0 each in their unit of work, as the batch worker does: the
    first keeps its transaction open until the second is seen waiting for a lock, then commits."""
    pools = [await asyncpg.create_pool(db_url, min_size=1, max_size=1) for _ in range(2)]  # one connection each
    observer = await asyncpg.connect(db_url)
    try:
        async with pools[1].acquire() as conn:
            second_pid = conn.get_server_pid()
        applied, release = asyncio.Event(), asyncio.Event()
        first = asyncio.create_task(as_owner(pools[0], handler, first_batch, applied, release, lock_on_enter))
        await asyncio.wait_for(applied.wait(), 10)
        second = asyncio.create_task(as_owner(pools[1], handler, second_batch, lock_on_enter=lock_on_enter))

        async def second_waits() -> bool:
            return bool(await observer.fetchval(
                "SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'", second_pid))

        await wait_until(second_waits, 10, "the second owner to wait for the first")
        release.set()
        first_out, second_out = await asyncio.wait_for(asyncio.gather(first, second), 10)
        return Raced(first_out, second_out)
    finally:
        await observer.close()
        for pool in pools:
            await pool.close()


async def history_of(conn: asyncpg.Connection, customer: str) -> list[str]:
    rows = await conn.fetch("SELECT command_id FROM command_history WHERE customer_id = $1 ORDER BY id", customer)
    return [row["command_id"] for row in rows]


# Taken on entering the unit of work (as the billing worker's batches take it), or in the state worker's one
# read of its batch (``state_batch_read``, migration 013): the second owner waits in either.
LOCK_PLACES = pytest.mark.parametrize("lock_on_enter", [True, False], ids=["lock on entering", "lock in the read"])


@LOCK_PLACES
async def test_a_second_owner_waiting_on_the_lock_applies_nothing_again(isolated: Settings,
                                                                         lock_on_enter: bool) -> None:
    space, customer = uid("space"), uid("owners")
    handler = StateHandler("state", Metrics())
    signup = builders.command(customer, space, reason="signup")
    pool = await asyncpg.create_pool(isolated.database_url, min_size=1, max_size=1)
    try:
        await as_owner(pool, handler, as_records([signup]))  # the customer is known: there is a row to lock
    finally:
        await pool.close()
    conn = await asyncpg.connect(isolated.database_url)
    try:
        batch = [builders.command(customer, space, reason="plan"), builders.command(customer, space, action="lift")]

        await two_owners(isolated.database_url, handler, as_records(batch), as_records(batch), lock_on_enter)

        state = await queries.customer_state(conn, customer)
        assert state is not None and not state.suspended and state.version == 3  # suspend, plan, lift
        # Nothing applied twice, not even as a no-op.
        assert await history_of(conn, customer) == [signup["command_id"], *(c["command_id"] for c in batch)]
    finally:
        await conn.close()


@LOCK_PLACES
async def test_a_second_owner_of_a_customer_with_no_row_yet_waits_and_applies_only_the_rest(
        isolated: Settings, lock_on_enter: bool) -> None:
    """No row to lock: the second owner waits on the partition instead, then applies only what is new."""
    space, customer = uid("space"), uid("owners")
    signup = builders.command(customer, space, reason="signup")
    lift = builders.command(customer, space, action="lift")

    # The first owner writes the customer's first row; the second has the same record and the next one.
    await two_owners(isolated.database_url, StateHandler("state", Metrics()), as_records([signup]),
                     as_records([signup, lift]), lock_on_enter)

    conn = await asyncpg.connect(isolated.database_url)
    try:
        state = await queries.customer_state(conn, customer)
        assert state is not None and not state.suspended and state.version == 2  # suspended, then lifted
        assert await history_of(conn, customer) == [signup["command_id"], lift["command_id"]]
    finally:
        await conn.close()


async def test_a_second_billing_owner_waits_and_publishes_no_decision_again(isolated: Settings) -> None:
    """The first owner's decision stands, and the second publishes nothing for that job."""
    job = as_records([builders.invoice_job(uid("owners"), uid("space"))], INVOICE_JOBS.name)
    job_id = orjson.loads(job[0].value)["job_id"]

    raced = await two_owners(isolated.database_url, BillingHandler("billing", Metrics()), job, job)

    assert [record.record_id for record in raced.first] == [job_id]
    assert raced.second == []
    conn = await asyncpg.connect(isolated.database_url)
    try:
        # What both transactions committed to publish (nothing publishes here): a decision made again would
        # be a second record for the job in the outbox.
        _, committed = await pending_rows(conn, INVOICE_JOBS.name, [0])
        assert [(record.topic, record.record_id) for record in committed] == [(INVOICE_JOBS_ACCEPTED.name, job_id)]
        decision = await conn.fetchrow("SELECT status FROM invoice_decisions WHERE job_id = $1", job_id)
        assert decision["status"] == "accepted"
    finally:
        await conn.close()
