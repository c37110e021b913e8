"""Issue 28: the state worker over many commands with a short dedup window: the database's size over time
(what retention bounds must level off), the throughput of the last tenth against the first, and what
pruning costs."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import asyncpg
import orjson

from bench.figures import Figure
from bench.plumbing import bench_worker, produce_all, skip_backlog
from models import utc_iso
from suspensions.local.processes import metric_total
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings

CHUNK = 200_000
BOUNDED = ("processed_commands", "customer_state", "schedules", "outbox")  # what retention (or the present) bounds


async def _produce(settings: Settings, count: int, customers: int, prefix: str) -> None:
    """``count`` commands over ``customers``, produced in chunks (never all in memory)."""
    rng = random.Random(28)
    issued = utc_iso()
    for start in range(0, count, CHUNK):
        records = []
        for i in range(start, min(count, start + CHUNK)):
            customer = f"{prefix}-{rng.randrange(customers)}"
            action = "suspend" if rng.random() < 0.6 else "lift"
            records.append((customer.encode(), orjson.dumps({
                "command_id": f"{prefix}-{i}", "issued_at": issued, "space_id": "bench-retention",
                "customer_id": customer, "action": action, "reason": "manual" if action == "lift" else
                rng.choice(["signup", "plan", "crm_stage", "manual"]), "actor": "system"})))
        await produce_all(settings, SUSPENSION_COMMANDS.name, records)


async def _sizes(conn: asyncpg.Connection) -> tuple[int, int]:
    """(the tables retention bounds, the audit log) in bytes; asked again when it met a partition being
    dropped (a deadlock PostgreSQL breaks by failing one of the two: this one)."""
    for _ in range(10):
        try:
            return await _sizes_once(conn)
        except (asyncpg.DeadlockDetectedError, asyncpg.UndefinedTableError):
            await asyncio.sleep(0.05)
    return await _sizes_once(conn)


async def _sizes_once(conn: asyncpg.Connection) -> tuple[int, int]:
    bounded = await conn.fetchval("SELECT sum(pg_total_relation_size(relid)) FROM unnest($1::text[]) AS t, "
                                  "LATERAL pg_partition_tree(t::regclass)", list(BOUNDED))
    history = await conn.fetchval("SELECT coalesce(sum(pg_total_relation_size(relid)), 0) "
                                  "FROM pg_partition_tree('command_history')")
    return int(bounded), int(history)


@dataclass
class Run:
    samples: list[tuple[float, float, int, int]]  # (seconds, consumed, bounded bytes, history bytes)
    prune_s: float  # time in retention passes
    dropped: float  # partitions dropped

    def rate_between(self, low: float, high: float, count: int) -> float:
        """Records per second between two shares of the run (the whole run's when too few samples fall there:
        a tiny run)."""
        inside = [s for s in self.samples if low * count <= s[1] <= high * count]
        if len(inside) < 2:
            inside = [self.samples[0], self.samples[-1]]
        first, last = inside[0], inside[-1]
        return (last[1] - first[1]) / max(last[0] - first[0], 1e-3) if last[1] > first[1] else count / max(
            self.samples[-1][0], 1e-3)


async def _run(settings: Settings, count: int, customers: int, window_s: float, prefix: str) -> Run:
    """The state worker over a backlog of ``count`` commands, sampled every half second."""
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    await _produce(settings, count, customers, prefix)
    worker = bench_worker(settings, "state", SUSPENSIONS_DEDUP_RETENTION=str(window_s),
                          SUSPENSIONS_RETENTION_INTERVAL_S="1")
    samples: list[tuple[float, float, int, int]] = []
    conn = await asyncpg.connect(settings.database_url)
    try:
        await worker.wait_ready(120)
        started = None
        deadline = time.monotonic() + 3_600
        while True:
            consumed = await asyncio.to_thread(metric_total, worker.http_port, "suspensions_records_consumed_total")
            now = time.perf_counter()
            if started is None and consumed > 0:
                started = now
            if started is not None:
                samples.append((now - started, consumed, *await _sizes(conn)))
            if consumed >= count:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the state worker consumed {consumed} of {count} within an hour")
            await asyncio.sleep(0.5)
        prune_s = await asyncio.to_thread(metric_total, worker.http_port, "suspensions_retention_pass_seconds_sum")
        dropped = await asyncio.to_thread(metric_total, worker.http_port,
                                          "suspensions_retention_partitions_dropped_total")
    finally:
        await conn.close()
        worker.stop()
    return Run(samples, prune_s, dropped)


async def retention_case(settings: Settings, count: int, customers: int, window_s: float) -> list[Figure]:
    """The same backlog with a short window and (up to a million commands) with a day's, which drops nothing:
    the throughput of the last tenth against the first in each, and the database's size by tenth."""
    # The short window first: a day's window makes partitions a day long, which the short run would then use.
    run = await _run(settings, count, customers, window_s, "ret")
    control = await _run(settings, count, customers, 86_400, "ctl") if count <= 1_000_000 else None
    total_s = max(run.samples[-1][0], 1e-3)
    first_rate, last_rate = run.rate_between(0.0, 0.1, count), run.rate_between(0.9, 1.0, count)
    by_tenth = [next((s for s in run.samples if s[1] >= tenth * count / 10), run.samples[-1])
                for tenth in range(1, 11)]
    notes = [f"{customers:,} customers; {int(run.dropped)} partitions of processed ids dropped; retention passes "
             f"took {run.prune_s:.1f} s of wall time (lock waits included), {run.prune_s / total_s:.1%} of the run"]
    if control is not None:
        control_s = max(control.samples[-1][0], 1e-3)
        notes.append(f"with a day's window (nothing dropped): last/first "
                     f"{control.rate_between(0.9, 1.0, count) / control.rate_between(0.0, 0.1, count):.2f}, "
                     f"whole run {count / control_s:,.0f}/s against {count / total_s:,.0f}/s with the short window")
    throughput = Figure(f"state worker, {count:,} commands, {window_s:g} s dedup window: last tenth vs first",
                        count, last_rate, "the first tenth", first_rate, seconds=total_s,
                        target="ratio >= 0.9", met=last_rate >= 0.9 * first_rate, notes=notes)
    size = Figure("database size with retention (MB per tenth of the run)", count, count / total_s,
                  target="bounded tables level off", met=by_tenth[-1][2] <= 1.25 * by_tenth[4][2],
                  notes=[f"bounded (processed ids, states, schedules, outbox): {[round(s[2] / 1e6) for s in by_tenth]}",
                         f"history (kept forever by default, monthly partitions): "
                         f"{[round(s[3] / 1e6) for s in by_tenth]}"])
    return [throughput, size]
