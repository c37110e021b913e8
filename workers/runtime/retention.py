"""Retention: what each table keeps and for how long, and the loop that removes the rest.

Each rule names a table, the setting of its window, what must never be removed early, and the worker
that owns the data and runs it. The loop deletes in small batches, oldest first, each in a short
transaction of its own (never a long lock), with a try-lock per table so that several instances of a
worker do not do the same work. `command_history` is partitioned by month: a month past its window goes in
one `DROP TABLE`, and the partitions of the months ahead are created before they are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal, Protocol

import asyncpg

from workers.runtime.config import Settings
from workers.runtime.metrics import Metrics

log = logging.getLogger(__name__)

HISTORY = "command_history"
PROCESSED = "processed_commands"
EPOCH = datetime(1, 1, 1, tzinfo=UTC)
MARKS_FOR_S = 3_600.0
SPANS_AHEAD = 3  # partitions of processed ids made in advance
# A partition's creation or drop waits this long for its locks, then tries again at the next pass. A drop
# takes ACCESS EXCLUSIVE on the parent: it waits for the batches in flight, and new ones wait behind it, so
# each drop costs the writers one batch's time at most; a shorter timeout could fail behind every batch and
# cost that stall at each pass without ever dropping.
DDL_LOCK_TIMEOUT_MS = 2_000  # how long removal resumes where it ended before starting from the oldest row again


Layout = Literal["rows", "months", "spans"]


class Connections(Protocol):
    def acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...


@dataclass(frozen=True)
class Rule:
    """What one table keeps. Rows whose ``age_column`` is older than ``window`` and that match ``removable``
    are removed; None keeps them forever."""

    table: str
    setting: str  # the environment variable of its window
    window: timedelta | None
    age_column: str
    keeps: str  # what must stay whatever its age, and why, in words (`suspensions db retention`, the docs)
    removable: str = "true"  # SQL: the rows the rule may remove at all
    layout: Layout = "rows"  # rows: deleted in batches; months or spans: whole partitions dropped

    def describe(self) -> str:
        window = "forever" if self.window is None else f"{_duration(self.window)}"
        return f"{self.setting}={window}; {self.keeps}"


def _duration(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{window.total_seconds():g} s"


def state_rules(settings: Settings) -> list[Rule]:
    """The state worker's tables."""
    return [
        Rule(PROCESSED, "SUSPENSIONS_DEDUP_RETENTION", settings.dedup_retention, "processed_at",
             "command ids applied within the window, in partitions of a quarter of it (at most a day): a copy "
             "re-sent later is applied again as a new command", layout="spans"),
        Rule(HISTORY, "SUSPENSIONS_HISTORY_RETENTION", settings.history_retention, "applied_at",
             "the audit log, by month; a month goes once all of it is past the window", layout="months"),
        Rule("schedules", "SUSPENSIONS_SCHEDULES_RETENTION", settings.schedules_retention, "updated_at",
             "pending schedules always; fired and cancelled ones for the window", "status <> 'pending'"),
    ]


def billing_rules(settings: Settings) -> list[Rule]:
    return [Rule("invoice_decisions", "SUSPENSIONS_INVOICE_DEDUP_RETENTION", settings.invoice_dedup_retention,
                 "coalesce(settled_at, decided_at)", "dropped jobs until a lift settles them, then for the window "
                 "from the settling (the overview's billed back and waived); the others for the window from the "
                 "decision (a job id re-sent later is decided again)", "status <> 'dropped'")]


def api_rules(settings: Settings) -> list[Rule]:
    return [
        Rule("console_sessions", "SUSPENSIONS_SESSIONS_RETENTION", settings.sessions_retention, "expires_at",
             "sessions until they expire (or idle out), then for the window"),
        Rule("bulk_jobs", "SUSPENSIONS_BULK_JOBS_RETENTION", settings.bulk_jobs_retention, "updated_at",
             "running jobs always; finished jobs' reports for the window", "status <> 'running'"),
    ]


def overdue_rules(settings: Settings) -> list[Rule]:
    return [Rule("customer_invoices", "SUSPENSIONS_SETTLED_INVOICES_RETENTION", settings.settled_invoices_retention,
                 "settled_at", "open invoices always; paid and voided ones for the window (a status record of an "
                 "invoice forgotten since is taken as new)", "status <> 'open'")]


def directory_rules(settings: Settings) -> list[Rule]:
    return [Rule("dead_letters", "SUSPENSIONS_DEAD_LETTERS_RETENTION", settings.dead_letters_retention, "failed_at",
                 "each space's dead letters for the console (the `deadletter` topic keeps them as long as its "
                 "retention)")]


def webhooks_rules(settings: Settings) -> list[Rule]:
    keeps = "pending deliveries always; finished ones and every attempt for the window (the delivery log)"
    return [Rule("webhook_attempts", "SUSPENSIONS_WEBHOOKS_RETENTION", settings.webhooks_retention, "attempted_at",
                 keeps),
            Rule("webhook_deliveries", "SUSPENSIONS_WEBHOOKS_RETENTION", settings.webhooks_retention, "finished_at",
                 keeps, "status <> 'pending'")]


# Who runs which rules: the worker that owns the data (the API process for sessions and bulk jobs).
RULES_BY_OWNER: dict[str, Callable[[Settings], list[Rule]]] = {
    "state": state_rules, "billing": billing_rules, "overdue": overdue_rules, "directory": directory_rules,
    "webhooks": webhooks_rules, "api": api_rules,
}


def dedup_window_warning(window: timedelta, retention_ms: str | None) -> str | None:
    """Why the dedup window is too short for the commands topic, or None (also when the broker does not say)."""
    try:
        kept_ms = int(retention_ms) if retention_ms is not None else None
    except ValueError:
        kept_ms = None
    if kept_ms is None or timedelta(0) <= timedelta(milliseconds=kept_ms) <= window:
        return None
    kept = "forever (-1)" if kept_ms < 0 else _duration(timedelta(milliseconds=kept_ms))
    return (f"SUSPENSIONS_DEDUP_RETENTION ({_duration(window)}) is shorter than suspension.commands' retention.ms "
            f"({kept}): a command re-sent, or read again, after its id was forgotten is applied again as a new one. "
            "Set it to the topic's retention plus the longest time a producer retries.")


# --- partitions ---------------------------------------------------------------------------------------
# A partitioned table's partitions say their range in their names: `<table>_pYYYYMM` for a month (history),
# `<table>_p<start>_<end>` in Unix seconds for a span (processed ids; start 0: from the beginning of time).
# Rows outside every partition go to `<table>_default`, whose old rows are deleted like any table's.


@dataclass(frozen=True)
class Partition:
    name: str
    start: datetime  # EPOCH: from the beginning of time
    end: datetime


def month_start(moment: datetime) -> date:
    return date(moment.year, moment.month, 1)


def next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{HISTORY}_p{month:%Y%m}"


def _moment(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def span_of(window: timedelta) -> timedelta:
    """How long one partition of processed ids covers: a quarter of the window, between a second and a day."""
    return max(timedelta(seconds=1), min(timedelta(days=1), window / 4))


async def partitions(conn: asyncpg.Connection, table: str) -> list[Partition]:
    """The table's partitions (the default one aside), oldest first."""
    rows = await conn.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                            "WHERE i.inhparent = $1::regclass", table)
    found = []
    for row in rows:
        suffix = row["relname"].removeprefix(f"{table}_p")
        if re.fullmatch(r"\d{6}", suffix):
            month = date(int(suffix[:4]), int(suffix[4:]), 1)
            found.append(Partition(row["relname"], _moment(month), _moment(next_month(month))))
        elif (bounds := re.fullmatch(r"(\d+)_(\d+)", suffix)) is not None:
            first, last = int(bounds[1]), int(bounds[2])
            found.append(Partition(row["relname"], EPOCH if first == 0 else datetime.fromtimestamp(first, UTC),
                                   datetime.fromtimestamp(last, UTC)))
    return sorted(found, key=lambda partition: partition.start)


async def history_partitions(conn: asyncpg.Connection) -> list[date]:
    """The months that have a history partition, oldest first."""
    return [partition.start.date() for partition in await partitions(conn, HISTORY)]


async def create_partition(conn: asyncpg.Connection, table: str, column: str, name: str, start: datetime,
                           end: datetime) -> None:
    """Create one partition without blocking writers: a table of its own, checked to hold only its range, then
    attached (SHARE UPDATE EXCLUSIVE on the parent, where creating it in place would take ACCESS EXCLUSIVE).
    Rows of its range in the default partition (written while none existed) move in."""
    low, high = f"'{start.isoformat()}'", f"'{end.isoformat()}'"
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT_MS}ms'")
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
            return
        await conn.execute(f"CREATE TEMP TABLE moving ON COMMIT DROP AS WITH gone AS (DELETE FROM {table}_default "
                           f"WHERE {column} >= {low} AND {column} < {high} RETURNING *) SELECT * FROM gone")
        await conn.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
                           f"CONSTRAINT {name}_range CHECK ({column} >= {low} AND {column} < {high}))")
        await conn.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})")
        await conn.execute(f"INSERT INTO {table} SELECT * FROM moving")


async def drop_partition(conn: asyncpg.Connection, table: str, name: str) -> bool:
    """Drop a partition (ACCESS EXCLUSIVE on its parent, for as long as the batches in flight take); False when
    the lock did not come within ``DDL_LOCK_TIMEOUT_MS``, and the next pass tries again. The parent is locked
    first, as every reader locks it before its partitions: dropping the partition first would deadlock with a
    batch that holds the parent and reads every partition."""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT_MS}ms'")
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            await conn.execute(f"DROP TABLE IF EXISTS {name}")
    except asyncpg.LockNotAvailableError:
        return False
    return True


async def ensure_partition(conn: asyncpg.Connection, month: date) -> bool:
    """Create history's partition of ``month`` unless it exists; True when created."""
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", partition_name(month)):
        return False
    await create_partition(conn, HISTORY, "applied_at", partition_name(month), _moment(month),
                           _moment(next_month(month)))
    return True


async def ensure_spans(conn: asyncpg.Connection, table: str, column: str, span: timedelta, now: datetime,
                       ahead: int) -> int:
    """Partitions of ``span`` from the last one's end to ``ahead`` spans past now (after a long stop, from the
    span before now: the gap is the default partition's)."""
    held = await partitions(conn, table)
    step = int(span.total_seconds())
    start = int(max([partition.end for partition in held], default=now).timestamp())
    start = max(start, int(now.timestamp()) - step)
    created = 0
    while start < now.timestamp() + ahead * step:
        await create_partition(conn, table, column, f"{table}_p{start}_{start + step}",
                               datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(start + step, UTC))
        start += step
        created += 1
    return created


async def oldest_partitioned(conn: asyncpg.Connection, table: str, column: str) -> datetime | None:
    """The oldest row kept, cheaply on any size: the start of the oldest partition holding a row (its oldest
    row, for one from the beginning of time), or the default partition's oldest row if older."""
    oldest: datetime | None = await conn.fetchval(f"SELECT min({column}) FROM {table}_default")
    for partition in await partitions(conn, table):
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {partition.name})"):
            start = partition.start if partition.start != EPOCH else await conn.fetchval(
                f"SELECT min({column}) FROM {partition.name}")
            return min(start, oldest) if oldest is not None else start
    return oldest


@dataclass(frozen=True)
class TableReport:
    """What `suspensions db retention` says of one table."""

    table: str
    owner: str  # the worker (or the API process) that prunes it
    bytes: int  # table, indexes and TOAST, every partition included
    rows: int  # PostgreSQL's estimate (reltuples), every partition included
    oldest: datetime | None  # the oldest row its rule could remove
    rule: str
    partitions: int  # partitions (history's months, processed ids' spans), else 0


async def report(conn: asyncpg.Connection, settings: Settings) -> list[TableReport]:
    """Every rule's table as it is now; asked again when it met a partition being dropped."""
    for _ in range(4):
        try:
            return await _report(conn, settings)
        except (asyncpg.DeadlockDetectedError, asyncpg.UndefinedTableError):
            await asyncio.sleep(0.1)
    return await _report(conn, settings)


async def _report(conn: asyncpg.Connection, settings: Settings) -> list[TableReport]:
    reports = []
    for owner, rules in RULES_BY_OWNER.items():
        for rule in rules(settings):
            size = await conn.fetchrow(
                "SELECT coalesce(sum(pg_total_relation_size(relid)), 0) AS bytes, "
                "coalesce(sum(greatest(c.reltuples, 0)), 0) AS rows "
                "FROM pg_partition_tree($1::regclass) t JOIN pg_class c ON c.oid = t.relid", rule.table)
            partitioned = rule.layout != "rows"
            oldest = await (oldest_partitioned(conn, rule.table, rule.age_column) if partitioned else conn.fetchval(
                f"SELECT min({rule.age_column}) FROM {rule.table} WHERE ({rule.removable})"))
            count = len(await partitions(conn, rule.table)) if partitioned else 0
            reports.append(TableReport(rule.table, owner, int(size["bytes"]), int(size["rows"]), oldest,
                                       rule.describe(), count))
    return reports


# --- the loop ------------------------------------------------------------------------------------------


@dataclass
class Pruner:
    """Runs rules every ``settings.retention_interval_s`` until cancelled."""

    rules: list[Rule]
    pool: Connections
    settings: Settings
    metrics: Metrics
    _marks: dict[str, datetime] = field(default_factory=dict)  # by table: the age the last removal reached
    _marks_since: float = field(default_factory=time.perf_counter)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.once()
            except Exception as error:  # noqa: BLE001  housekeeping: logged and tried again, never a stop
                log.warning("retention failed, trying again later", extra={"error": repr(error)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.retention_interval_s)

    async def once(self, now: datetime | None = None) -> dict[str, int]:
        """One pass over every rule, on one connection; returns the rows (and partitions) removed by table. Its
        time (``suspensions_retention_pass_seconds``) counts from the connection on, not the wait for it."""
        now = now or datetime.now(UTC)
        async with self.pool.acquire() as conn:
            started = time.perf_counter()
            if started - self._marks_since > MARKS_FOR_S:  # rows written with an age older than a mark come too
                self._marks.clear()
                self._marks_since = started
            removed: dict[str, int] = {}
            for rule in self.rules:
                if rule.layout != "rows":
                    removed[rule.table] = await self._partitioned(conn, rule, now)
                elif rule.window is not None:
                    removed[rule.table] = await self._rows(conn, rule, now - rule.window)
                await self._observe_oldest(conn, rule, now)
            self.metrics.retention_pass_seconds.observe(time.perf_counter() - started)
        return removed

    async def _rows(self, conn: asyncpg.Connection, rule: Rule, cutoff: datetime) -> int:
        """Remove in batches, oldest first, each its own transaction, until a batch comes back short.

        Each batch starts at the age where the last one ended (``_marks``): the index entries of rows deleted
        but not vacuumed yet are never walked again, so a batch costs its own rows, not the table's history.
        """
        batch, total = self.settings.retention_batch, 0
        sql = (f"WITH gone AS (DELETE FROM {rule.table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {rule.table} "
               f"WHERE {rule.age_column} >= $1 AND {rule.age_column} < $2 AND ({rule.removable}) "
               f"ORDER BY {rule.age_column} LIMIT $3)) RETURNING {rule.age_column} AS age) "
               "SELECT count(*) AS removed, max(age) AS reached FROM gone")
        while True:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))",
                                           f"retention:{rule.table}"):
                    return total  # another instance is at it
                done = await conn.fetchrow(sql, self._marks.get(rule.table, EPOCH), cutoff, batch)
            count = int(done["removed"])
            total += count
            if count:
                self._marks[rule.table] = done["reached"]
                self.metrics.retention_rows_removed.labels(table=rule.table).inc(count)
            if count < batch:
                return total

    async def _partitioned(self, conn: asyncpg.Connection, rule: Rule, now: datetime) -> int:
        """Partitions ahead (history: this month and the next ones; processed ids: spans past now); past the
        window (when set), whole partitions dropped and the default partition's old rows removed."""
        if rule.layout == "months":
            month = month_start(now)
            for _ in range(self.settings.history_partitions_ahead + 1):
                await ensure_partition(conn, month)
                month = next_month(month)
        elif rule.window is not None:
            await ensure_spans(conn, rule.table, rule.age_column, span_of(rule.window), now, SPANS_AHEAD)
        if rule.window is None:
            return 0
        cutoff = now - rule.window
        dropped = 0
        for partition in await partitions(conn, rule.table):
            if partition.end <= cutoff and await drop_partition(conn, rule.table, partition.name):
                self.metrics.retention_partitions_dropped.labels(table=rule.table).inc()
                log.info("partition dropped", extra={"partition": partition.name})
                dropped += 1
        default = Rule(f"{rule.table}_default", rule.setting, rule.window, rule.age_column, rule.keeps)
        return dropped + await self._rows(conn, default, cutoff)

    async def _observe_oldest(self, conn: asyncpg.Connection, rule: Rule, now: datetime) -> None:
        if rule.layout != "rows":
            oldest = await oldest_partitioned(conn, rule.table, rule.age_column)
        else:
            oldest = await conn.fetchval(f"SELECT min({rule.age_column}) FROM {rule.table} "
                                         f"WHERE {rule.age_column} >= $1 AND ({rule.removable})",
                                         self._marks.get(rule.table, EPOCH))
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
        self.metrics.retention_oldest_seconds.labels(table=rule.table).set(age)
