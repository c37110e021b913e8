"""Issue 7.1: kill -9 a worker in the middle of a 20,000-record stream, restart it, lose and double nothing."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.integration import builders
from tests.reliability.harness import (
    assert_each_published_once,
    assert_state_matches_oracle,
    command_stream,
    count,
    customers,
    produce,
    read_topic,
    wait_for_count,
)
from tests.support import WorkerProcess, uid, wait_until
from topics import CUSTOMER_SIGNUPS, INVOICE_JOBS, SETTINGS_SIGNUP, SUSPENSION_COMMANDS
from workers.runtime.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STREAM = 20_000
# What one kill -9 can leave to be published again: the outbox rows of the batches in flight, published but
# not yet deleted (SUSPENSIONS_BATCH_MAX_IN_FLIGHT x SUSPENSIONS_BATCH_MAX_RECORDS at the defaults).
REPUBLISHED_AT_MOST = 2 * 2_000


KILLED_AT = 4_000  # of STREAM: the kill comes well before the end


async def kill_midway_and_restart(settings: Settings, worker: str, load: Coroutine[Any, Any, None],
                                  progress: Callable[[WorkerProcess], Awaitable[float]], log_dir: Path,
                                  source_topic: str | None = None) -> WorkerProcess:
    """Start `worker`, feed it `load` (a coroutine), kill -9 it once its own `progress` counts KILLED_AT,
    restart it.

    With `source_topic`, the kill comes at a moment the worker's outbox holds rows from that topic,
    so the restarted worker has something left over to publish.
    """
    first = WorkerProcess(settings, (worker,), log_path=log_dir / f"{worker}-1.log").start()
    try:
        await first.wait_ready()
        producing = asyncio.create_task(load)

        async def under_way() -> bool:
            return await progress(first) >= KILLED_AT

        await wait_until(under_way, 120, f"the {worker} worker well under way")
        if source_topic is not None:
            await freeze_holding_outbox_rows(settings.database_url, first, source_topic)
        first.kill()
        await producing
    finally:
        first.stop()
    return WorkerProcess(settings, (worker,), log_path=log_dir / f"{worker}-2.log").start()


async def freeze_holding_outbox_rows(db_url: str, worker: WorkerProcess, source_topic: str) -> None:
    """Leave `worker` stopped (SIGSTOP) at a moment its outbox holds rows.

    A worker that keeps up with its load deletes its published rows whenever it is idle, so a kill
    at a random moment may leave nothing behind. Stopped, it can neither publish nor delete between
    the count and the kill; when the count finds nothing, it runs on (SIGCONT) and is tried again.
    """
    conn = await asyncpg.connect(db_url)
    try:
        async def settled() -> bool:
            """No statement of the stopped worker still running: one sent before the stop (a delete of
            published rows, a commit) would otherwise change the count after it is taken. One waiting for a
            lock cannot finish while the transaction holding it (another of the stopped worker's) waits too."""
            return not await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state = 'active' "
                "AND wait_event_type IS DISTINCT FROM 'Lock' "
                "AND wait_event IS DISTINCT FROM 'ClientWrite'")  # done, its answer waiting for the client

        async def stopped_with_rows() -> bool:
            os.kill(worker.running.pid, signal.SIGSTOP)
            try:
                await wait_until(settled, 10, "the stopped worker's statements to finish")
            except AssertionError as error:  # say which, for the next reader of a failed run
                active = await conn.fetch(
                    "SELECT backend_type, wait_event_type, wait_event, now() - query_start AS running, "
                    "left(query, 120) AS query FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state = 'active'")
                raise AssertionError(f"{error}: {[dict(row) for row in active]}") from None
            if await conn.fetchval("SELECT count(*) FROM outbox WHERE source_topic = $1", source_topic):
                return True
            os.kill(worker.running.pid, signal.SIGCONT)
            return False

        await wait_until(stopped_with_rows, 60, f"the {source_topic} outbox to hold rows at a kill")
    finally:
        await conn.close()


def rows(sql: str) -> Callable[[WorkerProcess], Awaitable[float]]:
    """A worker's progress as rows it committed (its own tables)."""
    async def counted(worker: WorkerProcess) -> float:
        return await count(worker.settings.database_url, sql)

    return counted


def consumed(worker_name: str, topic: str) -> Callable[[WorkerProcess], Awaitable[float]]:
    """A worker's progress as records it consumed from `topic` (its own metric)."""
    async def metric(worker: WorkerProcess) -> float:
        return await asyncio.to_thread(worker.metric, "suspensions_records_consumed_total", worker=worker_name,
                                       topic=topic)

    return metric


async def test_state_worker_killed_mid_stream(isolated: Settings, tmp_path: Path) -> None:
    stream = command_stream(customers(2_000), uid("space"), STREAM)
    distinct = len({c["command_id"] for c in stream})
    second = await kill_midway_and_restart(isolated, "state", produce(isolated, SUSPENSION_COMMANDS.name, stream),
                                           rows("SELECT count(*) FROM processed_commands"), tmp_path,
                                           source_topic=SUSPENSION_COMMANDS.name)
    try:
        await wait_for_count(isolated.database_url, "SELECT count(*) FROM processed_commands", distinct, 180,
                             "every command applied after the restart")
        await wait_for_count(isolated.database_url,
                             "SELECT CASE WHEN count(*) = 0 THEN 1 ELSE 0 END FROM outbox", 1, 60, "outbox drained")
        await assert_state_matches_oracle(isolated, stream, allowed_repeats=REPUBLISHED_AT_MOST)
        # The restarted worker found rows its killed predecessor left in the outbox, and published them.
        assert await asyncio.to_thread(second.metric, "suspensions_outbox_recovered_records_total") > 0
    finally:
        second.stop()


async def test_triggers_worker_killed_mid_stream(isolated: Settings, tmp_path: Path) -> None:
    space = uid("space")
    signups = [builders.signup(customer, space) for customer in customers(STREAM)]
    signups += random.Random(3).sample(signups, 500)  # replayed events
    state = WorkerProcess(isolated, ("state",), log_path=tmp_path / "state.log").start()
    second = None
    try:
        await state.wait_ready()
        await publish_setting_direct(isolated, space)
        # Killed on its own progress: the state worker's lags behind it, so the triggers worker could
        # otherwise have read and committed every signup before the kill.
        second = await kill_midway_and_restart(isolated, "triggers", produce(isolated, CUSTOMER_SIGNUPS.name, signups),
                                               consumed("triggers", CUSTOMER_SIGNUPS.name), tmp_path)
        await wait_for_count(isolated.database_url, "SELECT count(*) FROM processed_commands", STREAM, 240,
                             "a command for every signup after the restart")
        # The restarted worker did part of the stream: the kill came before the first had read it all.
        assert await consumed("triggers", CUSTOMER_SIGNUPS.name)(second) > 0
        conn = await asyncpg.connect(isolated.database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM customer_state WHERE suspended AND version = 1 "
                                       "AND reasons = '{signup}'") == STREAM
            assert await conn.fetchval("SELECT count(*) FROM command_history") == STREAM
            assert await conn.fetchval("SELECT count(DISTINCT customer_id) FROM command_history") == STREAM
        finally:
            await conn.close()
    finally:
        for worker in (second, state):
            if worker:
                worker.stop()


async def publish_setting_direct(settings: Settings, space: str) -> None:
    """Published before the triggers worker starts: it reads every setting to the end first."""
    await produce(settings, SETTINGS_SIGNUP.name, [builders.signup_setting(space, True)], key_field="space_id")


async def test_billing_worker_killed_mid_stream(isolated: Settings, tmp_path: Path) -> None:
    space = uid("space")
    people = customers(2_000)
    suspended = set(random.Random(5).sample(people, 200))
    jobs = [builders.invoice_job(random.Random(i).choice(people), space) for i in range(STREAM)]
    jobs += random.Random(9).sample(jobs, 500)  # redelivered jobs
    distinct = len({j["job_id"] for j in jobs})

    state = WorkerProcess(isolated, ("state",), log_path=tmp_path / "state.log").start()
    second = None
    try:
        await state.wait_ready()
        await produce(isolated, SUSPENSION_COMMANDS.name, [builders.command(c, space) for c in sorted(suspended)])
        await wait_for_count(isolated.database_url, "SELECT count(*) FROM customer_state", len(suspended), 60,
                             "the suspensions committed")
        second = await kill_midway_and_restart(isolated, "billing", produce(isolated, INVOICE_JOBS.name, jobs),
                                               rows("SELECT count(*) FROM invoice_decisions"), tmp_path,
                                               source_topic=INVOICE_JOBS.name)
        await wait_for_count(isolated.database_url, "SELECT count(*) FROM invoice_decisions", distinct, 180,
                             "a decision for every job after the restart")
        await wait_for_count(isolated.database_url,
                             "SELECT CASE WHEN count(*) = 0 THEN 1 ELSE 0 END FROM outbox", 1, 60, "outbox drained")

        expected = {j["job_id"]: ("dropped" if j["customer_id"] in suspended else "accepted") for j in jobs}
        conn = await asyncpg.connect(isolated.database_url)
        try:
            decided = {r["job_id"]: r["status"] for r in await conn.fetch(
                "SELECT job_id, status FROM invoice_decisions")}
        finally:
            await conn.close()
        assert decided == expected
        for topic, status in (("invoice.jobs.accepted", "accepted"), ("invoice.jobs.dropped", "dropped")):
            assert_each_published_once([record for _, record in await read_topic(isolated, topic)],
                                       lambda record: record["job_id"],
                                       {job for job, decided_as in expected.items() if decided_as == status},
                                       REPUBLISHED_AT_MOST)
        assert await asyncio.to_thread(second.metric, "suspensions_outbox_recovered_records_total") > 0
    finally:
        for worker in (second, state):
            if worker:
                worker.stop()
