"""Issue 27.2: a rolling upgrade. The previous release's workers (built from git, in a virtualenv of their own:
previous_release.py) and this tree's run in the same consumer groups, on the same database and topics, under
load, through the switch; every record is decided exactly once.

- upgrade: the previous release runs on its own schema; this release's migration is applied under it (expand),
  this release's workers join, the previous ones stop (SIGTERM).
- upgrade after a crash: the previous release is killed (-9) while its outbox holds rows; this release
  publishes them.
- rollback after a crash: this release runs on its own schema; it is killed (-9) while its outbox holds rows;
  the previous release takes over and publishes them, on the migrated schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from models.version import SERVICE_VERSION
from suspensions.local.broker import LocalBroker
from suspensions.local.processes import WorkerProcess as LocalWorkerProcess
from tests.integration import builders
from tests.reliability.harness import (
    assert_each_published_once,
    assert_state_matches_oracle,
    command_stream,
    count,
    customers,
    distinct_commands,
    produce,
    read_topic,
    wait_until_decided,
)
from tests.reliability.previous_release import Release, ReleaseWorkerProcess, previous_release, run_release_cli
from tests.reliability.test_crash import REPUBLISHED_AT_MOST, freeze_holding_outbox_rows
from tests.support import WorkerProcess, create_database, publish_setting, uid, wait_until
from topics import CUSTOMER_SIGNUPS, INVOICE_JOBS, SETTINGS_SIGNUP, SUSPENSION_COMMANDS
from workers.runtime.config import Settings
from workers.runtime.db.migrate import migrate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKERS = ("triggers", "state", "billing")
COMMANDS, SIGNUPS, JOBS = 10_000, 3_000, 3_000
UNDER_WAY = 1_000  # commands applied by the first release before the switch begins


@pytest.fixture(scope="module")
def previous() -> Release:
    release = previous_release()
    assert release.version != SERVICE_VERSION, "previous_release.txt names this release: name the one before it"
    return release


@pytest_asyncio.fixture
async def bare(settings: Settings) -> AsyncIterator[Settings]:
    """A broker and a database of the test's own, with no topic and no schema: the release that deploys first
    makes them."""
    url = await create_database(settings, "upgrade")
    broker = LocalBroker().start()
    try:
        yield settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers, "database_url": url})
    finally:
        broker.stop()


def healthz(process: LocalWorkerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{process.http_port}/healthz", timeout=2) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


def consumed(process: LocalWorkerProcess, worker: str) -> float:
    return process.metric("suspensions_records_consumed_total", worker=worker)


async def applied_commands(settings: Settings) -> int:
    return await count(settings.database_url, "SELECT count(*) FROM processed_commands")


async def produce_through(settings: Settings, topic: str, records: list[dict[str, Any]], switched: asyncio.Event,
                          pace_every: int, pause_s: float = 0.5) -> None:
    """``records`` keyed by customer: four fifths paced (``pace_every`` per ``pause_s``), then one record per
    ``pause_s`` until ``switched`` is set, then the rest at once."""
    held_back = len(records) * 4 // 5
    await produce(settings, topic, records[:held_back], pace_every=pace_every, pause_s=pause_s)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        index = held_back
        while index < len(records) and not switched.is_set():
            record = records[index]
            await producer.send_and_wait(topic, orjson.dumps(record), key=record["customer_id"].encode())
            index += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(switched.wait(), pause_s)  # the pace, cut short by the switch
    finally:
        await producer.stop()
    await produce(settings, topic, records[index:])


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("first", "stop"), [
    pytest.param("previous", "sigterm", id="upgrade"),
    pytest.param("previous", "kill", id="upgrade-after-a-crash"),
    pytest.param("current", "kill", id="rollback-after-a-crash"),
])
async def test_two_releases_in_the_same_groups_decide_every_record_once(
        first: str, stop: str, bare: Settings, previous: Release, tmp_path: Path) -> None:
    settings = bare
    # Deployed: the previous release made its schema and the topics.
    for args in (("db", "migrate"), ("topics", "create")):
        done = run_release_cli(previous, settings, *args)
        assert done.returncode == 0, done.stderr
    if first == "current":
        await migrate(settings.database_url)  # the upgrade happened; now it is rolled back
        # A rolled-back deploy runs its setup again: the previous release's migrate, on the newer schema, with
        # versions it does not know in schema_migrations (this release's, and one of a release to come).
        conn = await asyncpg.connect(settings.database_url)
        try:
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ('999_a_later_release')")
        finally:
            await conn.close()
        again = run_release_cli(previous, settings, "db", "migrate")
        assert again.returncode == 0, again.stderr
        assert "none (up to date)" in again.stdout

    def process(release: str, name: str) -> LocalWorkerProcess:
        log = tmp_path / f"{name}-{release}.log"
        if release == "previous":
            return ReleaseWorkerProcess(settings, WORKERS, log_path=log, release=previous)
        return WorkerProcess(settings, WORKERS, log_path=log)

    predecessor = process(first, "first")
    successor = process("current" if first == "previous" else "previous", "second")

    space, signup_space = uid("space"), uid("space")
    stream = command_stream(customers(1_000), space, COMMANDS)
    signups = [builders.signup(c, signup_space) for c in customers(SIGNUPS)]
    jobs = [builders.invoice_job(c, space) for c in customers(JOBS)]
    producing: asyncio.Future[Any] | None = None
    try:
        predecessor.start()
        await predecessor.wait_ready()
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            await publish_setting(producer, predecessor, SETTINGS_SIGNUP.name, signup_space,  # type: ignore[arg-type]
                                  builders.signup_setting(signup_space, True))
        finally:
            await producer.stop()

        # Paced over about 40 s, then a trickle until the switch is over, so that it happens while records flow
        # however slow the machine; the rest follows at once.
        switched = asyncio.Event()
        producing = asyncio.gather(
            produce_through(settings, SUSPENSION_COMMANDS.name, stream, switched, pace_every=100),
            produce_through(settings, CUSTOMER_SIGNUPS.name, signups, switched, pace_every=30),
            produce_through(settings, INVOICE_JOBS.name, jobs, switched, pace_every=30),
        )

        async def under_way() -> bool:
            return await applied_commands(settings) >= UNDER_WAY

        await wait_until(under_way, 120, f"the {first} release under way")
        if first == "previous":
            # Migrate first: this release's migrations, applied while the previous release works on.
            await migrate(settings.database_url)
        consumed_by_predecessor = {worker: await asyncio.to_thread(consumed, predecessor, worker)
                                   for worker in WORKERS}
        predecessor_health = await asyncio.to_thread(healthz, predecessor)

        if stop == "sigterm":
            successor.start()
            await successor.wait_ready()  # in the groups, beside the predecessor: both hold partitions
            assert not producing.done(), "the stream ended before the second release joined"
            predecessor_at_join = await asyncio.to_thread(consumed, predecessor, "state")

            async def both_apply_commands() -> bool:
                return (await asyncio.to_thread(consumed, successor, "state") > 0
                        and await asyncio.to_thread(consumed, predecessor, "state") > predecessor_at_join)

            await wait_until(both_apply_commands, 60, "both releases' state workers applying commands at once")
            assert not producing.done(), "the stream ended before both releases worked side by side"
            assert predecessor.running.poll() is None, f"the {first} release died (log: {predecessor.log_path})"
            assert await asyncio.to_thread(predecessor.stop) == 0, (
                f"the {first} release did not stop cleanly (log: {predecessor.log_path})")
        else:
            # Killed while its outbox holds rows of committed batches: the other release must publish them.
            await freeze_holding_outbox_rows(settings.database_url, predecessor,  # type: ignore[arg-type]
                                             SUSPENSION_COMMANDS.name)
            predecessor.kill()
            successor.start()
            await successor.wait_ready()
        assert not producing.done(), "the stream ended before the switch"
        successor_health = await asyncio.to_thread(healthz, successor)
        switched.set()
        await producing

        await wait_until_decided(settings.database_url, distinct_commands(stream) + len(signups), len(jobs))

        # Each release did its share: the first before the switch, the second after it, and each says which it is.
        assert all(consumed_by_predecessor[worker] > 0 for worker in WORKERS), consumed_by_predecessor
        for worker in WORKERS:
            assert await asyncio.to_thread(consumed, successor, worker) > 0, f"the second release's {worker} idled"
        current_health, previous_health = ((predecessor_health, successor_health) if first == "current"
                                           else (successor_health, predecessor_health))
        assert current_health["version"] == SERVICE_VERSION
        # The previous release's processes ran its own code (0.1.0 says no version; a later one says its own).
        assert previous_health.get("version") in (None, previous.version)
        if stop == "kill":
            recovered = await asyncio.to_thread(successor.metric, "suspensions_outbox_recovered_records_total")
            assert recovered > 0, "the second release published none of the rows the first left in the outbox"

        repeats = 0 if stop == "sigterm" else REPUBLISHED_AT_MOST
        conn = await asyncpg.connect(settings.database_url)
        try:
            # Every signup decided once: suspended, version 1 (a second decision would be version 2).
            assert await conn.fetchval(
                "SELECT count(*) FROM customer_state WHERE space_id = $1 AND version = 1 AND suspended",
                signup_space) == len(signups)
            assert await conn.fetchval("SELECT count(*) FROM command_history WHERE space_id = $1",
                                       signup_space) == len(signups)
            assert await conn.fetchval("SELECT count(*) FROM invoice_decisions WHERE status = 'accepted'") == len(jobs)
            # Leave only the directly commanded customers for the oracle comparison.
            await conn.execute("DELETE FROM customer_state WHERE space_id = $1", signup_space)
            await conn.execute("DELETE FROM command_history WHERE space_id = $1", signup_space)
        finally:
            await conn.close()
        assert_each_published_once([record for _, record in await read_topic(settings, "invoice.jobs.accepted")],
                                   lambda record: record["job_id"], {j["job_id"] for j in jobs}, repeats)
        await assert_state_matches_oracle(settings, stream, allowed_repeats=repeats)
    finally:
        if producing is not None and not producing.done():
            producing.cancel()
            await asyncio.gather(producing, return_exceptions=True)
        predecessor.stop()
        successor.stop()
