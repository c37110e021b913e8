"""Issue 15: a decision for every signup, one lifecycle event per change, CloudEvents headers."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from models import Action, CustomerSignup, Reason, decode
from tests.integration import builders
from tests.integration.markers import suspending_signup
from tests.support import TopicTail, WorkerProcess, publish_setting, run_cli, send, uid, wait_until
from topics import (
    CUSTOMER_PLAN_CHANGES,
    CUSTOMER_SIGNUPS,
    INVOICE_JOBS,
    INVOICE_JOBS_DROPPED,
    SETTINGS_PLANS,
    SETTINGS_SIGNUP,
    SUSPENSION_EVENTS,
    SUSPENSION_STATE,
)
from workers.runtime.config import Settings
from workers.triggers.rules import command_id_for

pytestmark = pytest.mark.integration


async def _processed(db: asyncpg.Pool, command_id: str) -> str | None:
    return await db.fetchval("SELECT outcome FROM processed_commands WHERE command_id = $1", command_id)


async def test_every_signup_gets_a_decision(workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail,
                                            db: asyncpg.Pool) -> None:
    suspending, admitting = uid("space-on"), uid("space-off")
    await publish_setting(producer, workers, SETTINGS_SIGNUP.name, suspending,
                          builders.signup_setting(suspending, True))
    kept_out, let_in = uid("cust"), uid("cust")
    await send(producer, CUSTOMER_SIGNUPS.name, kept_out, builders.signup(kept_out, suspending))
    await send(producer, CUSTOMER_SIGNUPS.name, let_in, builders.signup(let_in, admitting))

    [no] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=kept_out)
    [yes] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=let_in)
    assert (no["suspended"], no["reasons"], no["version"]) == (True, ["signup"], 1)
    assert (yes["suspended"], yes["reasons"], yes["version"], yes["suspended_at"]) == (False, [], 1, None)
    [admitted] = await tail.wait_for(SUSPENSION_EVENTS.name, customer_id=let_in)
    assert (admitted["type"], admitted["source"], admitted["reasons_before"], admitted["reasons_after"]) == (
        "admitted", "signup_rule", [], [])

    # The setting goes off and the suspended customer signs up again: the decision (a register) is a
    # no-op for a known customer, never a write back to "not suspended".
    await publish_setting(producer, workers, SETTINGS_SIGNUP.name, suspending,
                          builders.signup_setting(suspending, False))
    again = builders.signup(kept_out, suspending)
    await send(producer, CUSTOMER_SIGNUPS.name, kept_out, again)
    register_id = command_id_for(CUSTOMER_SIGNUPS.name, decode(CustomerSignup, orjson.dumps(again)), Reason.SIGNUP,
                                 Action.REGISTER)
    assert await wait_until(lambda: _processed(db, register_id), what="the second signup's decision") == "noop"
    row = await db.fetchrow("SELECT suspended, version FROM customer_state WHERE customer_id = $1", kept_out)
    assert (row["suspended"], row["version"]) == (True, 1)
    # A marker behind it on the same partition that does change the state (its plan suspends joiners): its
    # state record follows any the second signup's decision would have published.
    plan = uid("plan")
    await publish_setting(producer, workers, SETTINGS_PLANS.name, plan, builders.plan_setting(suspending, plan, True))
    assert await suspending_signup(producer, tail, kept_out, suspending, plan) == [
        (1, True, ["signup"]), (2, True, ["signup", "plan"])]


async def test_one_event_per_change_in_order(settings: Settings, workers: WorkerProcess, producer: AIOKafkaProducer,
                                             tail: TopicTail, db: asyncpg.Pool) -> None:
    space, plan, customer = uid("space"), uid("plan"), uid("cust")
    await publish_setting(producer, workers, SETTINGS_PLANS.name, plan, builders.plan_setting(space, plan, True))
    await send(producer, CUSTOMER_SIGNUPS.name, customer, builders.signup(customer, space))
    await tail.wait_for(SUSPENSION_EVENTS.name, customer_id=customer, type="admitted")
    suspended = run_cli(settings, "suspend", customer, "--space", space, "--actor", "admin:ops", "--note", "deposit",
                        "--wait")
    assert suspended.returncode == 0, suspended.stderr
    await send(producer, CUSTOMER_PLAN_CHANGES.name, customer, builders.plan_change(customer, space, plan))
    await tail.wait_for(SUSPENSION_EVENTS.name, customer_id=customer, type="reason_added")
    job = builders.invoice_job(customer, space)
    await send(producer, INVOICE_JOBS.name, customer, job)
    await tail.wait_for(INVOICE_JOBS_DROPPED.name, job_id=job["job_id"])
    lifted = run_cli(settings, "lift", customer, "--space", space, "--actor", "admin:ops", "--wait")
    assert lifted.returncode == 0, lifted.stderr

    events = await tail.wait_for(SUSPENSION_EVENTS.name, count=4, customer_id=customer)
    assert [(e["type"], e["version"], e["source"]) for e in events] == [
        ("admitted", 1, "signup_rule"), ("suspended", 2, "operator_cli"), ("reason_added", 3, "plan_rule"),
        ("lifted", 4, "operator_cli")]
    assert [e["reasons_after"] for e in events] == [[], ["manual"], ["manual", "plan"], []]
    assert [e["reasons_before"] for e in events] == [[], [], ["manual"], ["manual", "plan"]]
    assert events[1]["actor"] == "admin:ops" and events[1]["note"] == "deposit"
    assert events[2]["cause"]["topic"] == CUSTOMER_PLAN_CHANGES.name
    assert (events[3]["missed_invoices"], events[3]["invoices_billed"], events[3]["invoices_waived"]) == (
        "bill", [job["job_id"]], None)
    assert len({e["event_id"] for e in events}) == 4
    states = tail.matching(SUSPENSION_STATE.name, customer_id=customer)
    assert [s["version"] for s in states] == [e["version"] for e in events]  # one event per state change


async def _records_with_headers(settings: Settings, topic: str, customer: str, count: int) -> list[ConsumerRecord]:
    """Read as any team's consumer would: plain aiokafka, headers included."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        found: list[ConsumerRecord] = []

        async def enough() -> bool:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(r for r in records if r.key == customer.encode())
            return len(found) >= count

        await wait_until(enough, 30, f"{count} records of {customer} on {topic}")
        return found
    finally:
        await consumer.stop()


async def test_cloudevents_headers_on_state_and_events(settings: Settings, workers: WorkerProcess,
                                                       producer: AIOKafkaProducer, tail: TopicTail) -> None:
    space, customer = uid("space"), uid("cust")
    await publish_setting(producer, workers, SETTINGS_SIGNUP.name, space, builders.signup_setting(space, True))
    await send(producer, CUSTOMER_SIGNUPS.name, customer, builders.signup(customer, space))
    [event] = await _records_with_headers(settings, SUSPENSION_EVENTS.name, customer, 1)
    [state] = await _records_with_headers(settings, SUSPENSION_STATE.name, customer, 1)
    event_value, state_value = orjson.loads(event.value), orjson.loads(state.value)
    for record, ce_id, ce_type, ce_time in (
        (event, event_value["event_id"], "suspensions.suspended", event_value["occurred_at"]),
        (state, f"{customer}:1", "suspensions.state", state_value["updated_at"]),
    ):
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["ce_specversion"] == "1.0"
        assert (headers["ce_id"], headers["ce_type"], headers["ce_subject"]) == (ce_id, ce_type, customer)
        assert headers["ce_source"] == "/suspensions" and headers["content-type"] == "application/json"
        assert datetime.fromisoformat(headers["ce_time"]) == datetime.fromisoformat(ce_time)
        assert headers["record_id"] == ce_id
    assert "event_id" not in state_value and event_value["type"] == "suspended"  # values stay plain JSON
