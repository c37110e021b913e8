"""Issue 27, part 1: a PostgreSQL or broker that hangs instead of failing, a row lock held elsewhere, a slow
database. Each time the workers and the API say so within their timeouts, apply nothing by halves, and go
on once the dependency answers: every command decided exactly once (the oracle)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from suspensions.access import Role
from suspensions.local.broker import LocalBroker
from suspensions.local.postgres import LocalPostgres
from tests.hang import DelayingLink, frozen, postgres_processes, process_tree
from tests.integration import builders
from tests.integration.test_api_capacity import auth, new_token, own_api
from tests.reliability.harness import (
    assert_state_matches_oracle,
    command_stream,
    count,
    customers,
    distinct_commands,
    produce,
    wait_for_count,
    wait_until_decided,
)
from tests.support import WorkerProcess, create_database, uid, wait_for_http, wait_until
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings
from workers.runtime.db.migrate import migrate
from workers.runtime.kafka import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Short timeouts, so a test outlasts them several times over in seconds rather than minutes.
TIMEOUTS = {
    "SUSPENSIONS_DATABASE_STATEMENT_TIMEOUT_S": "2",
    "SUSPENSIONS_DATABASE_LOCK_TIMEOUT_S": "1",
    "SUSPENSIONS_DATABASE_COMMAND_TIMEOUT_S": "3",
    "SUSPENSIONS_DATABASE_CONNECT_TIMEOUT_S": "3",
    "SUSPENSIONS_DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_S": "5",
    "SUSPENSIONS_KAFKA_REQUEST_TIMEOUT_MS": "5000",
    "SUSPENSIONS_API_DEPENDENCY_TIMEOUT_S": "2",
}


def readiness(worker: WorkerProcess) -> tuple[int, dict[str, Any]]:
    """/readyz's status and body (0 and nothing when the port does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.http_port}/readyz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:
        return 0, {}


async def not_ready_because(worker: WorkerProcess, words: str, timeout_s: float) -> str:
    """Wait until /readyz answers 503 with a reason containing ``words``; returns that reason."""
    async def reason() -> str | None:
        assert worker.process is not None and worker.process.poll() is None, "the worker process ended"
        status, body = await asyncio.to_thread(readiness, worker)
        reasons = [r for entry in body.get("workers", {}).values() for r in entry["not_ready_because"]]
        return next((r for r in reasons if words in r), None) if status == 503 else None

    found: str = await wait_until(reason, timeout_s, f"/readyz to say {words!r}")
    return found


async def ready_again(worker: WorkerProcess, timeout_s: float) -> None:
    async def ready() -> bool:
        return (await asyncio.to_thread(readiness, worker))[0] == 200

    await wait_until(ready, timeout_s, "/readyz ready again")


async def outlast(started_at: float, seconds: float, worker: WorkerProcess) -> None:
    """Until ``seconds`` have passed since ``started_at``, the worker staying alive throughout."""
    async def over() -> bool:
        assert worker.process is not None and worker.process.poll() is None, "the worker process ended"
        return time.monotonic() - started_at >= seconds

    await wait_until(over, seconds + 30, f"{seconds} s of the fault")


async def test_a_stopped_database_under_load_stalls_then_resumes_exactly_once(
        own_postgres: tuple[Settings, LocalPostgres], tmp_path: Path) -> None:
    local, postgres = own_postgres
    space = uid("space")
    stream = command_stream(customers(1_000), space, 8_000)
    first, rest = stream[:5_000], stream[5_000:]
    worker = WorkerProcess(local, ("state", "api"), TIMEOUTS, log_path=tmp_path / "workers.log").start()
    try:
        await worker.wait_ready()
        await wait_for_http(f"http://127.0.0.1:{worker.api_port}/healthz")
        _, token = await new_token(local, Role.VIEWER, space)
        producing = asyncio.create_task(produce(local, SUSPENSION_COMMANDS.name, first, pace_every=500, pause_s=0.2))
        await wait_for_count(local.database_url, "SELECT count(*) FROM processed_commands", 500, 60,
                             "load under way")
        with frozen(postgres_processes(postgres)):
            stopped_at = time.monotonic()
            await producing  # the broker takes the load while PostgreSQL answers nothing
            await produce(local, SUSPENSION_COMMANDS.name, rest)
            await not_ready_because(worker, "PostgreSQL unreachable", 15)  # the process's own ping
            # The worker's batch itself gave up on its statement and waits to retry it whole.
            await not_ready_because(worker, "retrying postgresql work after TimeoutError", 15)
            # The API answers at once that it cannot, instead of holding the request.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{worker.api_port}", timeout=30) as client:
                asked_at = time.monotonic()
                answer = await client.get(f"/api/v1/spaces/{space}/customers",
                                          headers={"Authorization": f"Bearer {token}"})
                answered_after = time.monotonic() - asked_at
            assert answer.status_code == 503, answer.text
            # Whether its connections are all stuck (busy) or its statement is (did not answer): 503, Retry-After.
            assert int(answer.headers["retry-after"]) >= 1
            assert answer.json()["detail"].startswith(("busy", "unavailable")), answer.text
            assert answered_after < 10, f"the API answered after {answered_after:.1f} s"
            await outlast(stopped_at, 12, worker)  # several times every timeout
        await wait_until_decided(local.database_url, distinct_commands(stream), timeout_s=180)
        await ready_again(worker, 60)
        # Decided exactly once. A connection dropped while its COMMIT waited in the stopped server's socket may
        # still commit when the server resumes, after the worker gave the batch up: its records can then be
        # published twice, identically (the contract publishes at least once).
        await assert_state_matches_oracle(local, stream, allowed_repeats=len(stream))
        retries = await asyncio.to_thread(worker.metric, "suspensions_transient_failures_total",
                                          dependency="postgresql")
        assert retries >= 1  # the stop was seen as a failure to retry, not waited out in silence
    finally:
        assert worker.stop() == 0


@pytest_asyncio.fixture
async def own_broker(settings: Settings) -> AsyncIterator[tuple[Settings, LocalBroker]]:
    """A broker of the test's own (to stop) and a database of its own on the session's server."""
    url = await create_database(settings, "db")
    broker = LocalBroker().start()
    try:
        local = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers, "database_url": url})
        await migrate(url)
        await create_topics(local)
        yield local, broker
    finally:
        broker.stop()


async def test_a_stopped_broker_under_load_stalls_then_resumes_exactly_once(
        own_broker: tuple[Settings, LocalBroker], tmp_path: Path) -> None:
    isolated, broker = own_broker
    assert broker.process is not None
    broker_pid = broker.process.pid
    space = uid("space")
    stream = command_stream(customers(2_000), space, 24_000)
    first, rest = stream[:20_000], stream[20_000:]
    # A backlog waiting before the worker starts: it is mid-way through it (fetching, publishing, committing)
    # when the broker stops.
    await produce(isolated, SUSPENSION_COMMANDS.name, first)
    worker = WorkerProcess(isolated, ("state",), TIMEOUTS, log_path=tmp_path / "workers.log").start()
    try:
        await worker.wait_ready()
        await wait_for_count(isolated.database_url, "SELECT count(*) FROM processed_commands", 1_000, 60,
                             "the backlog under way")
        with frozen(process_tree(broker_pid)):
            stopped_at = time.monotonic()
            applied_at_stop = await count(isolated.database_url, "SELECT count(*) FROM processed_commands")
            assert applied_at_stop < len({c["command_id"] for c in first}), "the backlog was through before the stop"
            await not_ready_because(worker, "Kafka", 15)
            await outlast(stopped_at, 15, worker)  # past the request and the session timeouts
        await produce(isolated, SUSPENSION_COMMANDS.name, rest)
        await wait_until_decided(isolated.database_url, distinct_commands(stream), timeout_s=180)
        await ready_again(worker, 60)
        # Applied exactly once; a record whose publishing timed out may be on the topic twice, identically
        # (the contract publishes at least once).
        await assert_state_matches_oracle(isolated, stream, allowed_repeats=len(stream))
        # The stop hit work in flight (a publish, a fetch or an offset commit), which was given up and retried.
        assert await asyncio.to_thread(worker.metric, "suspensions_transient_failures_total", dependency="kafka") >= 1
    finally:
        assert worker.stop() == 0


async def test_a_row_locked_elsewhere_for_30_s_holds_its_partition_back_whole(
        isolated: Settings, tmp_path: Path) -> None:
    space = uid("space")
    held = uid("c")
    worker = WorkerProcess(isolated, ("state",), TIMEOUTS, log_path=tmp_path / "workers.log").start()
    producer = AIOKafkaProducer(bootstrap_servers=isolated.kafka_bootstrap_servers, acks="all")
    await producer.start()
    holder = await asyncpg.connect(isolated.database_url)
    try:
        await worker.wait_ready()

        async def send(command: dict[str, Any]) -> int:
            sent = await producer.send_and_wait(SUSPENSION_COMMANDS.name, orjson.dumps(command),
                                                key=command["customer_id"].encode())
            return int(sent.partition)

        suspend = builders.command(held, space, action="suspend", reason="manual")
        await send(suspend)
        await wait_for_count(isolated.database_url, "SELECT count(*) FROM customer_state WHERE suspended", 1, 30,
                             "the customer suspended")
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM customer_state WHERE customer_id = $1 FOR UPDATE", held)
        locked_at = time.monotonic()
        lift = builders.command(held, space, action="lift")
        held_partition = await send(lift)
        others = [builders.command(uid("c"), space, action="suspend", reason="manual") for _ in range(60)]
        behind = [c["command_id"] for c in others if await send(c) == held_partition]
        assert behind, "no command landed behind the lift on its partition"
        await not_ready_because(worker, "LockNotAvailableError", 15)
        await outlast(locked_at, 30, worker)
        # Nothing of the lift's partition went past it, and the lift itself waited whole.
        assert await count(isolated.database_url,
                           "SELECT count(*) FROM processed_commands WHERE command_id = ANY($1::text[])",
                           [lift["command_id"], *behind]) == 0
        assert await count(isolated.database_url,
                           "SELECT count(*) FROM customer_state WHERE customer_id = $1 AND suspended", held) == 1
        await transaction.rollback()
        stream = [suspend, lift, *others]
        await wait_until_decided(isolated.database_url, distinct_commands(stream), timeout_s=60)
        await ready_again(worker, 30)
        await assert_state_matches_oracle(isolated, stream)
    finally:
        await holder.close()
        await producer.stop()
        assert worker.stop() == 0


async def test_a_slow_database_is_slower_not_broken(isolated: Settings, tmp_path: Path) -> None:
    """Every statement 30 ms late (default timeouts): throughput falls, nothing times out or repeats."""
    parts = urlsplit(isolated.database_url)
    assert parts.port is not None
    link = DelayingLink(parts.port, 0.03).start()
    slow = isolated.model_copy(update={"database_url": urlunsplit(
        parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{link.port}")))})
    space = uid("space")
    stream = command_stream(customers(300), space, 3_000)
    worker = WorkerProcess(slow, ("state",), log_path=tmp_path / "workers.log").start()
    try:
        await worker.wait_ready()
        started = time.monotonic()
        await produce(isolated, SUSPENSION_COMMANDS.name, stream)
        await wait_until_decided(isolated.database_url, distinct_commands(stream), timeout_s=180)
        print(f"3,000 commands through a database 30 ms away per statement: {time.monotonic() - started:.1f} s")
        await assert_state_matches_oracle(isolated, stream)
        assert await asyncio.to_thread(worker.metric, "suspensions_transient_failures_total",
                                       dependency="postgresql") == 0
    finally:
        assert worker.stop() == 0
        link.stop()


async def test_the_api_answers_503_when_its_statement_waits_past_the_timeout(
        isolated: Settings, tmp_path: Path) -> None:
    async with own_api(isolated, tmp_path, **TIMEOUTS) as api:
        space = uid("space")
        _, token = await new_token(api.settings, Role.VIEWER, space)
        holder = await asyncpg.connect(api.settings.database_url)
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")  # every request reads it
            asked_at = time.monotonic()
            answer = await api.client.get(f"/api/v1/spaces/{space}/customers", headers=auth(token))
            answered_after = time.monotonic() - asked_at
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1 and answer.json()["detail"].startswith("unavailable")
            assert answered_after < 5, f"answered after {answered_after:.1f} s"
            await transaction.rollback()
        finally:
            await holder.close()
        assert (await api.client.get(f"/api/v1/spaces/{space}/customers", headers=auth(token))).status_code == 200
