"""Throughput and memory of the workers, with one process and with two, and a long backlog."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import orjson

from bench.figures import Figure, figure_named
from bench.load import command_stream, invoice_jobs, produce_event_mix
from bench.plumbing import bench_worker, measure_worker, produce_all, seed_states, skip_backlog
from bench.probes import time_consumption
from models import utc_iso
from suspensions.local.processes import metric_total
from topics import INVOICE_JOBS, SUSPENSION_COMMANDS
from workers.runtime.config import Settings


async def triggers_case(settings: Settings, count: int, passthrough: float, faust_floor: float) -> Figure:
    expected = await produce_event_mix(settings, count)
    figure = await measure_worker(settings, "triggers", count, "triggers worker", "raw pass-through", passthrough,
                                  f"{expected} commands emitted",
                                  emitted=("suspensions_trigger_commands_emitted_total", expected), target_ratio=0.25)
    if faust_floor and figure.records_per_s:
        figure.notes.append(f"{figure.records_per_s / faust_floor:.2f} of the faust floor")
    return figure


async def state_case(settings: Settings, count: int, customers: int, persistence: float) -> list[Figure]:
    """The state worker as deployed (lifecycle events on), and the same work with events off: what the
    events cost, as a ratio of the two (target: at most 10% less throughput)."""
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    await produce_all(settings, SUSPENSION_COMMANDS.name, command_stream(count, customers, prefix="off-"))
    off = await measure_worker(settings, "state", count, "state worker, lifecycle events off", "raw persistence",
                               persistence, f"{customers} customers",
                               env={"SUSPENSIONS_LIFECYCLE_EVENTS": "false"})
    await produce_all(settings, SUSPENSION_COMMANDS.name, command_stream(count, customers))
    on = await measure_worker(settings, "state", count, "state worker", "raw persistence", persistence,
                              f"{customers} customers; lifecycle events on")
    if on.records_per_s and off.records_per_s:
        with_events = on.records_per_s / off.records_per_s
        off.target, off.met = "events on >= 0.9 of off", with_events >= 0.9
        off.notes.append(f"events on / events off = {with_events:.2f}")
    return [on, off]


async def billing_case(settings: Settings, count: int, customers: int, persistence: float) -> Figure:
    suspended = {f"jc-{i}" for i in range(0, customers, 10)}  # 10% of the customers
    await seed_states(settings, [(c, "bench", True, ["manual"]) for c in sorted(suspended)])
    await produce_all(settings, INVOICE_JOBS.name, invoice_jobs(count, customers))
    return await measure_worker(settings, "billing", count, "billing consumer", "raw persistence", persistence,
                                "10% of jobs for suspended customers")


async def memory_case(settings: Settings, known_customers: int, traffic: int) -> list[Figure]:
    await seed_states(settings, [(f"mem-{i}", "mem", i % 7 == 0, ["manual"] if i % 7 == 0 else [])
                                  for i in range(known_customers)])
    rng = random.Random(4)
    commands, jobs = [], []
    for i in range(traffic):
        customer = f"mem-{rng.randrange(known_customers)}"
        commands.append((customer.encode(), orjson.dumps({
            "command_id": f"mcmd-{i}", "issued_at": utc_iso(), "space_id": "mem", "customer_id": customer,
            "action": "suspend", "reason": "plan", "actor": "system"})))
        customer = f"mem-{rng.randrange(known_customers)}"
        jobs.append((customer.encode(), orjson.dumps({
            "job_id": f"mjob-{i}", "space_id": "mem", "customer_id": customer, "contract_id": "k",
            "period_start": "2026-12-01", "period_end": "2026-12-31", "amount": "9.99", "currency": "EUR"})))
    figures = []
    for name, topic, records in (("state", SUSPENSION_COMMANDS.name, commands), ("billing", INVOICE_JOBS.name, jobs)):
        await skip_backlog(settings, getattr(settings, f"{name}_group"), topic)
        worker = bench_worker(settings, name)
        try:
            await worker.wait_ready(120)
            await produce_all(settings, topic, records)
            deadline = time.monotonic() + 300
            while await asyncio.to_thread(metric_total, worker.http_port, "suspensions_records_consumed_total") < traffic:
                if time.monotonic() > deadline:
                    raise TimeoutError("memory case did not finish")
                await asyncio.sleep(0.1)
            rss = worker.peak_rss_bytes() / 1e6
        finally:
            worker.stop()
        figures.append(Figure(f"memory: {name} worker", traffic, peak_rss_mb=rss,
                              target="< 250 MB RSS", met=rss < 250,
                              notes=[f"{known_customers:,} known customers in PostgreSQL"]))
    return figures


async def scale_out_case(settings: Settings, worker_name: str, count: int, one_process: Figure | None,
                         produce_backlog: Callable[[], Awaitable[None]]) -> Figure:
    """One worker with two processes in its group on this 2-core machine, over the same kind of backlog
    as its one-process case, as a ratio of that case's throughput."""
    await produce_backlog()
    workers = [bench_worker(settings, worker_name), bench_worker(settings, worker_name)]
    case = f"{one_process.case if one_process else worker_name}, two processes in the group"
    try:
        await asyncio.gather(*(worker.wait_ready(120) for worker in workers))
        seconds = await time_consumption([worker.http_port for worker in workers], count, timeout_s=300)
        figure = Figure(case, count, count / seconds, "one process",
                        one_process.records_per_s if one_process else None, seconds=seconds,
                        peak_rss_mb=max(w.peak_rss_bytes() for w in workers) / 1e6)
    except TimeoutError as error:  # a result, not a crash of the suite
        figure = Figure(case, count, 0, notes=[str(error)])
    finally:
        for worker in workers:
            worker.stop()
    figure.notes.append("2 cores for the broker, PostgreSQL and both processes")
    if one_process is not None and one_process.baseline_records_per_s and figure.records_per_s:
        # The one-process case's own target, met or not by two (``--processes 2``): issue 24 offers processes.
        figure.notes.append(f"{figure.records_per_s / one_process.baseline_records_per_s:.2f} of {one_process.baseline}")
    return figure


async def scale_out_cases(settings: Settings, count: int, customers: int, billing_customers: int,
                          figures: list[Figure]) -> list[Figure]:
    """The triggers, state and billing workers each with two processes, against their one-process figures."""
    async def events() -> None:
        await produce_event_mix(settings, count, seed=5)

    async def commands() -> None:
        await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
        await produce_all(settings, SUSPENSION_COMMANDS.name, command_stream(count, customers, prefix="two-"))

    async def jobs() -> None:
        await produce_all(settings, INVOICE_JOBS.name, invoice_jobs(count, billing_customers, prefix="two-"))

    return [await scale_out_case(settings, "triggers", count, figure_named(figures, "triggers worker"), events),
            await scale_out_case(settings, "billing", count, figure_named(figures, "billing consumer"), jobs),
            await scale_out_case(settings, "state", count, figure_named(figures, "state worker"), commands)]


async def backlog_case(settings: Settings, count: int, customers: int, persistence: float) -> Figure:
    """A backlog of ``count`` commands drained by one state worker: the time, and its rate as a ratio of the
    raw persistence relay's."""
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    await produce_all(settings, SUSPENSION_COMMANDS.name, command_stream(count, customers, prefix="backlog-"))
    figure = await measure_worker(settings, "state", count, f"state worker draining a {count:,}-command backlog",
                                  "raw persistence", persistence, f"{customers:,} customers")
    figure.target, figure.met = "", None
    return figure
