"""Measuring a worker process from outside: how long it took to consume a backlog."""

from __future__ import annotations

import asyncio
import time

from suspensions.local.processes import metric_total


async def time_consumption(port: int, total: int, timeout_s: float = 600.0, poll_s: float = 0.1) -> float:
    """Seconds from the worker's first consumed record to its last (records_consumed_total)."""
    name = "suspensions_records_consumed_total"
    deadline = time.monotonic() + timeout_s
    started = None
    while True:
        consumed = await asyncio.to_thread(metric_total, port, name)
        now = time.perf_counter()
        if started is None and consumed > 0:
            started = now
        if consumed >= total:
            return now - (started or now) or poll_s
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker consumed {consumed} of {total} records within {timeout_s}s")
        await asyncio.sleep(poll_s)
