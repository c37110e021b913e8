"""Issue 27, part 3: `suspensions db rebuild --from-topics` over many customers, against the state worker that
made the same records, in the same run.

The state worker applies one command per customer (each a new customer, suspended: a state record and a
lifecycle event each); then the rebuild reads the three topics it needs (`suspension.state`,
`suspension.events`, `suspension.commands`) into a new, empty database. The figure: customers rebuilt per
second, as a ratio of the state worker's commands per second; the rebuild's peak RSS (its process, read when
it exits), which must not grow with the customers (the topics are read in batches).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time

import asyncpg
import orjson

from bench.figures import Figure
from bench.plumbing import measure_worker, produce_all, skip_backlog
from models import utc_iso
from suspensions.local.processes import peak_rss_bytes, service_env
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings
from workers.runtime.db.migrate import migrate

CHUNK = 200_000
REASONS = ("signup", "plan", "crm_stage", "manual")


async def _produce(settings: Settings, customers: int) -> None:
    """One suspend per customer, in chunks (never all in memory)."""
    issued = utc_iso()
    for start in range(0, customers, CHUNK):
        await produce_all(settings, SUSPENSION_COMMANDS.name, [
            (f"rb-{i}".encode(), orjson.dumps({
                "command_id": f"rb-cmd-{i}", "issued_at": issued, "space_id": f"rb-space-{i % 50}",
                "customer_id": f"rb-{i}", "action": "suspend", "reason": REASONS[i % 4], "actor": "system"}))
            for i in range(start, min(customers, start + CHUNK))])


async def _empty_database(settings: Settings) -> str:
    name = f"rebuild_{os.getpid()}_{int(time.time())}"
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    await migrate(url)
    return url


def _rebuild(settings: Settings) -> tuple[float, int, dict[str, object]]:
    """Run the command as operators do; (seconds, peak RSS in bytes, its report). ``--force``: the local broker
    keeps the bench's stopped worker listed in the group (LOCAL_BROKER.md), so the offsets are found, not
    committed; the work is the same. The peak is the process's own high-water mark (VmHWM), read until it
    exits: ``ru_maxrss`` would count this process's size at the fork."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        process = subprocess.Popen([sys.executable, "-m", "suspensions", "db", "rebuild", "--from-topics", "--force",
                                    "--json"], env=service_env(settings, SUSPENSIONS_LOG_LEVEL="WARNING"),
                                   stdout=output, stderr=errors)
        peak = 0
        while process.poll() is None:
            with contextlib.suppress(OSError, TypeError):  # it exited between the two calls
                peak = max(peak, peak_rss_bytes(process.pid))
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"db rebuild exited with {process.returncode}: {errors.read()[-1000:].decode()}")
        output.seek(0)
        report: dict[str, object] = orjson.loads(output.read())
    return seconds, peak, report


async def recovery_case(settings: Settings, customers: int, persistence: float) -> list[Figure]:
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    await _produce(settings, customers)
    worker = await measure_worker(settings, "state", customers, f"state worker making {customers:,} customers",
                                  "raw persistence", persistence, "one suspend per new customer")
    rebuilt_settings = settings.model_copy(update={"database_url": await _empty_database(settings)})
    seconds, rss, report = await asyncio.to_thread(_rebuild, rebuilt_settings)
    read = sum(int(report[name]) for name in ("states_read", "events_read", "commands_read"))  # type: ignore[call-overload]
    inserted = int(report["states_inserted"])  # type: ignore[call-overload]
    rate = inserted / seconds
    steps = report["seconds_by_step"]
    assert isinstance(steps, dict)
    rebuild = Figure(f"db rebuild --from-topics, {customers:,} customers into an empty database", inserted, rate,
                     "state worker (same customers, same run)", worker.records_per_s, seconds=seconds,
                     peak_rss_mb=rss / 1e6, target="peak RSS < 250 MB", met=rss < 250e6 and inserted == customers,
                     notes=[f"{read:,} records read ({read / seconds:,.0f}/s): state, events, commands; "
                            f"{report['history_added']:,} history rows, {report['processed_added']:,} processed ids",
                            "seconds by step: " + ", ".join(f"{name} {value:.1f}" for name, value in steps.items()),
                            "the whole command as a process: start, three topics read, every write"])
    return [worker, rebuild]
