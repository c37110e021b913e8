"""What the hostile-input defences cost the common case (issue 21): the contract's checks per command, and
a batch holding one record PostgreSQL refuses against a clean batch of the same size."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import orjson
from pydantic import create_model

from bench.figures import Figure, figure_named
from bench.load import command_stream
from bench.plumbing import bench_worker, produce_all, skip_backlog
from models import SuspensionCommand
from models.base import ContractModel
from suspensions.local.processes import WorkerProcess, metric_total
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings


def unchecked(model: type[ContractModel]) -> type[ContractModel]:
    """The model's fields with their bare types: no pattern, bound or validator (so an upper bound of what
    the control-character and moment checks add)."""
    fields: dict[str, Any] = {name: (field.annotation, field.default if not field.is_required() else ...)
                              for name, field in model.model_fields.items()}
    made: type[ContractModel] = create_model(f"Unchecked{model.__name__}", __base__=ContractModel, **fields)
    return made


def decode_seconds(model: type[ContractModel], values: list[bytes], rounds: int = 5) -> float:
    """The best of ``rounds`` passes: seconds to decode every value."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for value in values:
            model.model_validate_json(value)
        best = min(best, time.perf_counter() - started)
    return best


def contract_checks_case(count: int, figures: list[Figure]) -> Figure:
    """Decoding a command with and without the checks, in this process; the difference per command as a
    share of the state worker's own time per command, measured earlier in the run (target: at most 5%)."""
    values = [value for _, value in command_stream(count, 1_000, prefix="chk-")]
    for value_index in range(0, len(values), 3):  # a note on a third of them, as operators write
        values[value_index] = values[value_index][:-1] + b',"note":"moved to the harbour space\\nsee ticket"}'
    with_checks = decode_seconds(SuspensionCommand, values)
    without = decode_seconds(unchecked(SuspensionCommand), values)
    extra_us = max(0.0, with_checks - without) / len(values) * 1e6
    figure = Figure("contract checks (decode a command)", len(values), len(values) / with_checks,
                    "the same fields unchecked", len(values) / without, seconds=with_checks,
                    notes=[f"{extra_us:.2f} us more per command"])
    state = figure_named(figures, "state worker")
    if state is not None and state.records_per_s:
        share = extra_us / (1e6 / state.records_per_s)
        figure.target, figure.met = "<= 5% of the state worker's time per command", share <= 0.05
        figure.notes.append(f"{share:.1%} of the state worker's time per command")
    return figure


async def _batch_seconds(settings: Settings, records: list[tuple[bytes, bytes]]) -> tuple[float, int]:
    """Produce the records, then start a state worker on them: the seconds its batches took (the
    batch histogram's sum: apply, split, dead-letter, publish) and how many batches."""
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    await produce_all(settings, SUSPENSION_COMMANDS.name, records)
    worker: WorkerProcess = bench_worker(settings, "state", SUSPENSIONS_BATCH_MAX_RECORDS=str(len(records)))
    try:
        await worker.wait_ready(120)
        deadline = time.monotonic() + 300
        name = "suspensions_records_consumed_total"
        while await asyncio.to_thread(metric_total, worker.http_port, name) < len(records):
            if time.monotonic() > deadline:
                raise TimeoutError("the state worker did not consume the batch")
            await asyncio.sleep(0.05)
        seconds = await asyncio.to_thread(metric_total, worker.http_port, "suspensions_batch_processing_seconds_sum")
        batches = await asyncio.to_thread(metric_total, worker.http_port, "suspensions_batch_processing_seconds_count")
    finally:
        worker.stop()
    return seconds, int(batches)


async def poison_batch_case(settings: Settings, batch: int = 2_000) -> Figure:
    """``batch`` commands (2,000: the default batch size) with one that PostgreSQL refuses (a constraint the
    contract does not know), against as many clean ones, each read by a fresh state worker (target: within
    3x)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("ALTER TABLE command_history DROP CONSTRAINT IF EXISTS bench_refused_notes; "
                           "ALTER TABLE command_history ADD CONSTRAINT bench_refused_notes "
                           "CHECK (note IS NULL OR note NOT LIKE 'poison%')")
        clean, clean_batches = await _batch_seconds(settings, command_stream(batch, batch, prefix="clean-"))
        poisoned_records = command_stream(batch, batch, prefix="poisoned-")
        key, value = poisoned_records[batch // 2]
        poisoned_records[batch // 2] = key, orjson.dumps(orjson.loads(value) | {"note": "poison"})
        poisoned, poisoned_batches = await _batch_seconds(settings, poisoned_records)
    finally:
        await conn.execute("ALTER TABLE command_history DROP CONSTRAINT IF EXISTS bench_refused_notes")
        await conn.close()
    figure = Figure(f"state worker, one refused record among {batch:,}", batch, batch / poisoned,
                    "the same batch, clean", batch / clean, seconds=poisoned,
                    target="time <= 3x the clean batch's", met=poisoned <= 3 * clean,
                    notes=[f"{poisoned / clean:.2f}x the clean batch's time",
                           f"batches: {clean_batches} clean, {poisoned_batches} poisoned"])
    return figure
