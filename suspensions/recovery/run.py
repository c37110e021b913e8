"""`suspensions db check` and `suspensions db rebuild --from-topics`: the topics and PostgreSQL at the edges,
the decisions in ``plan``, the SQL in ``workers/runtime/db/rebuild.py``.

Rebuild, in order (each step safe to repeat; a rebuild cut short is finished by running it again):

1. refuse while the state worker's group has members: the workers must be stopped (a running state worker
   would apply commands against a half-rebuilt state, and the broker refuses an offset commit from outside
   a group that has members); ``force`` goes on anyway;
2. `suspension.state`, whole: every customer's latest record moves its row forward (never back), and its
   pending schedules follow;
3. `suspension.events`, whole: the missing history rows and processed ids of every change;
4. the state worker's outbox rows already published (a restored backup's) are deleted or trimmed
   (``plan.outbox_decision``);
5. `suspension.commands`, whole: where the last change of each partition was read (a command whose event
   restored its processed id as changed, or the last command of a state on `suspension.state`), the state
   worker's group committed just after it (``plan.resume_offset``), and the ids of the commands before that point
   recorded as processed (no-ops make no event; a copy of one re-sent later must still have no effect).

Memory holds one batch of records at a time: the topic's versions (check) and the scan's bookkeeping
(rebuild) live in session tables of PostgreSQL. The outbox's customers' topic versions and the check's
differences are kept in memory (a restored outbox is what a few batches left).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from suspensions.lag import LagProbe
from suspensions.recovery import plan
from suspensions.recovery.topics import partitions_of, read_whole, topic_consumer
from topics import SUSPENSION_COMMANDS, SUSPENSION_EVENTS, SUSPENSION_STATE
from workers.runtime import poison, retention
from workers.runtime.broker_check import BrokerUnavailable
from workers.runtime.config import Settings
from workers.runtime.db import rebuild as sql
from workers.runtime.db.pool import describe
from workers.runtime.kafka import make_admin, make_consumer, start_client

# The longest one statement of a check or rebuild may run: each is one batch, but the check's comparison
# reads every customer at once.
RECOVERY_STATEMENT_TIMEOUT_S = 600.0
REQUIRED_TABLES = ("customer_state", "command_history", "processed_commands", "schedules", "outbox")


class Unreachable(Exception):
    """A dependency could not be used: the message names it (no password) and the cause."""


class Refused(Exception):
    """The rebuild will not run as things are; the message says why and what to do."""


@asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One session, its statements bounded by ``RECOVERY_STATEMENT_TIMEOUT_S`` (a check compares every
    customer in one query; the workers' 30 s is too short for that, nothing at all would let a hung server
    hang the command); an unreachable database or a schema not migrated is ``Unreachable``."""
    try:
        conn = await asyncpg.connect(**settings.database_connect_args(statement_timeout_s=RECOVERY_STATEMENT_TIMEOUT_S))
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise Unreachable(f"cannot reach PostgreSQL at {settings.database_location}: "
                          f"{type(error).__name__}: {error}") from None
    try:
        missing = [table for table in REQUIRED_TABLES if not await conn.fetchval("SELECT to_regclass($1)", table)]
        if missing:
            raise Unreachable(f"PostgreSQL at {settings.database_location} has no {', '.join(missing)}: "
                              "run `suspensions db migrate` first")
        try:
            yield conn
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                asyncpg.QueryCanceledError) as error:
            raise Unreachable(f"lost PostgreSQL at {settings.database_location} (or it did not answer in time): "
                              f"{describe(error)}") from None
    finally:
        if not conn.is_closed():
            await conn.close()


@asynccontextmanager
async def kafka(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    try:
        async with topic_consumer(settings) as consumer:
            yield consumer
    except BrokerUnavailable as error:
        raise Unreachable(str(error)) from None
    except (KafkaError, LookupError, TimeoutError) as error:  # TimeoutError: read_whole heard nothing
        raise Unreachable(f"broker {settings.kafka_bootstrap_servers}: {type(error).__name__}: {error}") from None


# --- db check --------------------------------------------------------------------------------------------


@dataclass
class CheckReport:
    differences: list[plan.Difference]
    counts: dict[str, int]
    topic_records: int  # state records read
    skipped: int  # records that are not states (never on this topic from the service)
    customers_on_topic: int
    customers_in_database: int

    @property
    def differs(self) -> bool:
        return bool(self.differences)


async def check(settings: Settings) -> CheckReport:
    """Every customer whose row differs from its latest record on `suspension.state` (read to the end it had
    when the check started), compared in PostgreSQL (a session table of the topic's versions)."""
    read = skipped = 0
    async with connect(settings) as conn, kafka(settings) as consumer:
        await sql.create_topic_versions(conn)
        async for batch in read_whole(consumer, SUSPENSION_STATE.name):
            read += len(batch)
            parsed = [plan.parse_state(record.key, record.value) for record in batch]
            states = plan.latest_states(state for state in parsed if state is not None)
            skipped += sum(state is None for state in parsed)
            await sql.add_topic_versions(conn, [s.customer_id for s in states], [s.version for s in states])
        differences: list[plan.Difference] = []
        async with conn.transaction():
            async for row in conn.cursor(sql.DIFFERENCES_SQL, prefetch=5_000):
                difference = plan.classify(row["customer_id"], row["database_version"], row["topic_version"])
                if difference is not None:
                    differences.append(difference)
        on_topic = int(await conn.fetchval("SELECT count(*) FROM topic_versions"))
        in_database = int(await conn.fetchval("SELECT count(*) FROM customer_state"))
    return CheckReport(differences, plan.count_by_kind(differences), read, skipped, on_topic, in_database)


# --- db rebuild --from-topics ----------------------------------------------------------------------------


@dataclass
class RebuildReport:
    states_read: int = 0
    states_skipped: int = 0
    states_inserted: int = 0
    states_updated: int = 0  # moved forward
    events_read: int = 0
    events_skipped: int = 0
    history_added: int = 0
    processed_added: int = 0
    outbox: dict[str, int] = field(default_factory=lambda: {fate.value: 0 for fate in plan.Fate} | {"unreadable": 0})
    commands_read: int = 0
    # per partition of suspension.commands: (committed before, where the group resumes)
    offsets: dict[int, tuple[int | None, int]] = field(default_factory=dict)
    offsets_committed: bool = False
    seconds: float = 0.0
    seconds_by_step: dict[str, float] = field(default_factory=dict)  # states, history, outbox, offsets


Progress = Callable[[str], None]


async def active_members(settings: Settings, group: str) -> int:
    try:
        async with LagProbe(settings) as probe:
            return await probe.active_members(group)
    except BrokerUnavailable as error:
        raise Unreachable(str(error)) from None
    except KafkaError as error:
        raise Unreachable(f"broker {settings.kafka_bootstrap_servers}: {type(error).__name__}: {error}") from None


async def rebuild(settings: Settings, *, force: bool = False, progress: Progress | None = None) -> RebuildReport:
    say = progress or (lambda _: None)
    started = time.perf_counter()
    group = settings.state_group
    members = await active_members(settings, group)
    if members and not force:
        raise Refused(f"the state worker's group {group} has {members} member(s): stop every state worker "
                      "first (`suspensions lag --group` shows the members), then run the rebuild again")
    report = RebuildReport()
    async with connect(settings) as conn, kafka(settings) as consumer:
        outbox = await sql.outbox_rows(conn, SUSPENSION_COMMANDS.name)
        watched = plan.outbox_customers(record for _, records in outbox for record in records or ())
        topic_versions: dict[str, int] = {}  # of the customers the old outbox names, as the topic has them
        command_partitions = len(await partitions_of(consumer, SUSPENSION_COMMANDS.name))

        await sql.create_scan_tables(conn)
        say("reading suspension.state")
        step = time.perf_counter()
        async for batch in read_whole(consumer, SUSPENSION_STATE.name):
            report.states_read += len(batch)
            parsed = [plan.parse_state(record.key, record.value) for record in batch]
            report.states_skipped += sum(state is None for state in parsed)
            states = plan.latest_states(state for state in parsed if state is not None)
            for state in states:
                if state.customer_id in watched:
                    topic_versions[state.customer_id] = max(state.version, topic_versions.get(state.customer_id, 0))
            partitions = {state.customer_id: command_partition(state.customer_id, command_partitions)
                          for state in states if state.schedules}
            await sql.remember_state_commands(conn, [s.last_command_id for s in states if s.last_command_id])

            async def write(chunk: Sequence[plan.TopicState],
                            partitions: dict[str, int] = partitions) -> list[tuple[int, int]]:
                return [await sql.upsert_states(conn, [state.value for state in chunk], partitions)]

            async def skip(state: plan.TopicState, error: BaseException) -> list[tuple[int, int]]:
                # A record PostgreSQL refuses (a field of the wrong type): skipped and counted, never a stop of
                # every run at the same record; `db check` then shows its customer.
                report.states_skipped += 1
                say(f"skipped the state of {state.customer_id} (version {state.version}): {poison.cause(error)}")
                return []

            for inserted, updated in await poison.isolate(states, write, skip):  # one statement each: all or none
                report.states_inserted += inserted
                report.states_updated += updated

        report.seconds_by_step["states"] = time.perf_counter() - step
        say("reading suspension.events")
        step = time.perf_counter()
        months: set[date] = set()
        async for batch in read_whole(consumer, SUSPENSION_EVENTS.name):
            report.events_read += len(batch)
            parsed_events = [plan.parse_event(record.value) for record in batch]
            report.events_skipped += sum(event is None for event in parsed_events)
            rows = [plan.history_from_event(event)
                    for event in plan.unique_events(event for event in parsed_events if event is not None)]
            for month in {retention.month_start(row.applied_at) for row in rows} - months:
                await retention.ensure_partition(conn, month)  # else the rows would land in the default one
                months.add(month)
            history, processed = await sql.insert_missing_history(conn, rows)
            report.history_added += history
            report.processed_added += processed

        report.seconds_by_step["history"] = time.perf_counter() - step
        step = time.perf_counter()
        for row_id, records in outbox:
            if records is None:  # a newer release's row (or a corrupt one): that release judges it
                report.outbox["unreadable"] += 1
                continue
            decision = plan.outbox_decision(records, topic_versions)
            report.outbox[decision.fate.value] += 1
            if decision.fate is plan.Fate.DELETE:
                await sql.delete_outbox_rows(conn, [row_id])
            elif decision.fate is plan.Fate.TRIM:
                await sql.rewrite_outbox_row(conn, row_id, decision.records)

        report.seconds_by_step["outbox"] = time.perf_counter() - step
        say("reading suspension.commands")
        step = time.perf_counter()
        await resume_group(settings, conn, consumer, group, report, commit=not members)
        report.seconds_by_step["offsets"] = time.perf_counter() - step
    report.seconds = time.perf_counter() - started
    return report


def command_partition(customer_id: str, partitions: int) -> int:
    """The partition of `suspension.commands` a customer's commands go to (the producers' default partitioner:
    murmur2 of the key), which the state worker that fires its schedules holds."""
    return int(murmur2(customer_id.encode()) & 0x7FFFFFFF) % partitions


async def resume_group(settings: Settings, conn: asyncpg.Connection, consumer: AIOKafkaConsumer, group: str,
                       report: RebuildReport, *, commit: bool) -> None:
    """Find the last change of each partition of `suspension.commands` and commit the state worker's group
    where ``plan.resume_offset`` says (not when ``commit`` is False: the group has members)."""
    partitions = await partitions_of(consumer, SUSPENSION_COMMANDS.name)
    admin = make_admin(settings)
    await start_client(admin, settings)
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await admin.close()
    committed = {tp.partition: (meta.offset if meta.offset >= 0 else None) for tp, meta in offsets.items()}
    log_start = {tp.partition: offset for tp, offset in (await consumer.beginning_offsets(partitions)).items()}

    last_change: dict[int, int] = {}
    async for batch in read_whole(consumer, SUSPENSION_COMMANDS.name):
        report.commands_read += len(batch)
        read = [(record, command_id) for record in batch
                if (command_id := plan.parse_command_id(record.value)) is not None]
        first = await sql.first_changes_among(
            conn, [command_id for _, command_id in read], [record.partition for record, _ in read],
            [record.offset for record, _ in read],
            [datetime.fromtimestamp(record.timestamp / 1000, UTC) for record, _ in read])
        for record, command_id in read:
            if command_id in first:
                first.discard(command_id)  # a later copy in the same batch is a duplicate
                last_change[record.partition] = max(record.offset, last_change.get(record.partition, -1))

    targets = {tp.partition: plan.resume_offset(committed.get(tp.partition), log_start.get(tp.partition, 0),
                                                last_change.get(tp.partition)) for tp in partitions}
    report.offsets = {partition: (committed.get(partition), target) for partition, target in targets.items()}
    report.processed_added += await sql.insert_applied_ids(conn, targets)
    moves = {TopicPartition(SUSPENSION_COMMANDS.name, partition): target for partition, target in targets.items()
             if committed.get(partition) != target}
    if not commit or not moves:
        report.offsets_committed = not moves
        return
    if await active_members(settings, group):
        raise Refused(f"a state worker joined {group} during the rebuild: the database is rebuilt, the group's "
                      "offsets are not moved; stop every state worker and run the rebuild again")
    committer = make_consumer(settings, group)
    await start_client(committer, settings)
    try:
        committer.assign(list(moves))
        await committer.commit(moves)
    finally:
        await committer.stop()
    report.offsets_committed = True
