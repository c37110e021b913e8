"""The triggers worker reads every setting to the end before its first event (global-table semantics)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from suspensions.local.broker import LocalBroker
from tests.integration import builders
from tests.support import TopicTail, WorkerProcess, send, uid
from topics import CUSTOMER_SIGNUPS, DEADLETTER, SETTINGS_PLANS, SETTINGS_SIGNUP, SUSPENSION_COMMANDS
from workers.runtime.config import Settings
from workers.runtime.kafka import create_topics

pytestmark = pytest.mark.integration


async def test_settings_published_while_down_apply_to_the_backlog(settings: Settings, tmp_path: Path) -> None:
    # A broker of its own: the triggers worker needs no database, and nothing else reads it.
    with LocalBroker() as broker:
        local = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
        await create_topics(local)
        spaces = [uid("space") for _ in range(3)]
        customers = [uid("cust") for _ in range(30)]
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            for space in spaces:
                await send(producer, SETTINGS_SIGNUP.name, space, builders.signup_setting(space, True))
            await send(producer, SETTINGS_PLANS.name, "wrong-key", builders.plan_setting(spaces[0], "p1", True))
            for index, customer in enumerate(customers):
                await send(producer, CUSTOMER_SIGNUPS.name, customer,
                           builders.signup(customer, spaces[index % len(spaces)]))
        finally:
            await producer.stop()

        tail = await TopicTail(local, (SUSPENSION_COMMANDS.name, DEADLETTER.name)).start()
        worker = WorkerProcess(local, workers=("triggers",), log_path=tmp_path / "triggers.log").start()
        try:
            commands = await tail.wait_for(SUSPENSION_COMMANDS.name, count=len(customers), timeout_s=90)
            assert sorted(c["customer_id"] for c in commands) == sorted(customers)
            # Every signup suspended: none was decided (register) before its space's setting was known.
            assert {(c["action"], c["reason"]) for c in commands} == {("suspend", "signup")}
            [letter] = await tail.wait_for(DEADLETTER.name, source_topic=SETTINGS_PLANS.name)
            assert "does not match its plan_id" in letter["error"]
        finally:
            assert worker.stop() == 0
            await tail.stop()
