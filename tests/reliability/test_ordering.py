"""Issue 7.5: the last command on the partition wins; a trigger after a manual lift suspends again."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import builders
from tests.support import TopicTail, WorkerProcess, publish_setting, run_cli, send, uid, wait_until
from topics import CUSTOMER_PLAN_CHANGES, SETTINGS_PLANS, SUSPENSION_COMMANDS, SUSPENSION_STATE
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration


async def test_suspend_and_lift_racing_from_two_sources(settings: Settings, workers: WorkerProcess,
                                                        producer: AIOKafkaProducer, tail: TopicTail,
                                                        db: asyncpg.Pool) -> None:
    space, plan = uid("space"), uid("plan")
    await publish_setting(producer, workers, SETTINGS_PLANS.name, plan, builders.plan_setting(space, plan, True))
    people = [uid("race") for _ in range(20)]
    for customer in people:  # suspended by an operator first, so a lift has something to end
        await send(producer, SUSPENSION_COMMANDS.name, customer, builders.command(customer, space))
    operator = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await operator.start()
    try:
        lifts = [builders.command(c, space, action="lift") for c in people]

        async def upstream() -> None:  # the plan change goes through the triggers worker
            for customer in people:
                await send(producer, CUSTOMER_PLAN_CHANGES.name, customer,
                           builders.plan_change(customer, space, plan))

        async def operators() -> None:  # the lift goes straight to the commands topic
            for lift in lifts:
                await send(operator, SUSPENSION_COMMANDS.name, lift["customer_id"], lift)

        await asyncio.gather(upstream(), operators())
    finally:
        await operator.stop()

    for customer in people:
        commands = await tail.wait_for(SUSPENSION_COMMANDS.name, count=3, customer_id=customer)
        last = commands[-1]

        async def applied(last: str = last) -> bool:
            return bool(await db.fetchval("SELECT 1 FROM processed_commands WHERE command_id = $1",
                                          last["command_id"]))

        await wait_until(applied, 30, f"the last command of {customer}")
        row = await db.fetchrow("SELECT suspended, reasons, last_command_id FROM customer_state "
                                "WHERE customer_id = $1", customer)
        # The operator's suspension came first; then the lift ends it whatever its reasons, and a plan
        # suspension after the lift is the only reason left. A plan suspension before the lift adds
        # "plan" to "manual", and the lift after it ends both.
        assert [(c["action"], c["reason"]) for c in commands[:1]] == [("suspend", "manual")]
        suspended, reasons = (False, []) if last["action"] == "lift" else (True, ["plan"])
        expected = (suspended, reasons, last["command_id"])
        assert (row["suspended"], list(row["reasons"]), row["last_command_id"]) == expected


async def test_plan_trigger_after_manual_lift_suspends_again(settings: Settings, workers: WorkerProcess,
                                                             producer: AIOKafkaProducer, tail: TopicTail) -> None:
    space, plan, customer = uid("space"), uid("plan"), uid("cust")
    await publish_setting(producer, workers, SETTINGS_PLANS.name, plan, builders.plan_setting(space, plan, True))
    assert run_cli(settings, "suspend", customer, "--space", space, "--actor", "admin:1", "--wait").returncode == 0
    assert run_cli(settings, "lift", customer, "--space", space, "--actor", "admin:1", "--wait").returncode == 0
    await send(producer, CUSTOMER_PLAN_CHANGES.name, customer, builders.plan_change(customer, space, plan))
    states = await tail.wait_for(SUSPENSION_STATE.name, count=3, customer_id=customer)
    assert [(s["suspended"], s["reasons"], s["version"]) for s in states] == [
        (True, ["manual"], 1), (False, [], 2), (True, ["plan"], 3)]
    assert states[2]["lifted_at"] == states[1]["lifted_at"] is not None
