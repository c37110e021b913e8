"""The downstream reader's kit runs as documented: docs/examples/downstream_reader.py against the real topics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import builders
from tests.support import TopicTail, WorkerProcess, publish_setting, send, uid
from topics import CUSTOMER_SIGNUPS, SETTINGS_SIGNUP, SUSPENSION_STATE
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "downstream_reader.py"


def reader(settings: Settings, customer: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE), "--bootstrap", settings.kafka_bootstrap_servers,
                           "--customer", customer, "--timeout", str(timeout_s)],
                          capture_output=True, text=True, timeout=timeout_s + 30)


async def test_the_example_gates_the_door_on_the_decision(settings: Settings, workers: WorkerProcess,
                                                          producer: AIOKafkaProducer, tail: TopicTail) -> None:
    suspending, admitting = uid("space-on"), uid("space-off")
    await publish_setting(producer, workers, SETTINGS_SIGNUP.name, suspending,
                          builders.signup_setting(suspending, True))
    kept_out, let_in, unknown = uid("cust"), uid("cust"), uid("cust")
    await send(producer, CUSTOMER_SIGNUPS.name, kept_out, builders.signup(kept_out, suspending))
    await send(producer, CUSTOMER_SIGNUPS.name, let_in, builders.signup(let_in, admitting))

    admitted = await asyncio.to_thread(reader, settings, let_in, 60)
    assert admitted.returncode == 0 and f"{let_in}: admit" in admitted.stdout, admitted.stdout + admitted.stderr
    assert "event admitted v1 by system (signup_rule)" in admitted.stdout
    denied = await asyncio.to_thread(reader, settings, kept_out, 60)
    assert denied.returncode == 1 and f"{kept_out}: deny (suspended)" in denied.stdout, denied.stderr
    undecided = await asyncio.to_thread(reader, settings, unknown, 2)
    assert undecided.returncode == 2, undecided.stdout + undecided.stderr
    assert undecided.stdout.splitlines() == [f"{unknown}: not decided yet: deny"]  # nobody else's events either
    # The door opens once the decision arrives: the same reader, the customer's signup now decided.
    await send(producer, CUSTOMER_SIGNUPS.name, unknown, builders.signup(unknown, admitting))
    [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=unknown)
    assert (state["version"], state["suspended"]) == (1, False)
    decided = await asyncio.to_thread(reader, settings, unknown, 60)
    assert decided.returncode == 0, decided.stdout + decided.stderr
    assert decided.stdout.splitlines() == ["event admitted v1 by system (signup_rule)", f"{unknown}: admit"]
