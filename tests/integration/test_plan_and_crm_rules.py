"""Issue 3: plan and CRM triggers, accumulation of reasons, settings turned off, no automatic lift."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import builders
from tests.integration.markers import suspending_signup
from tests.support import TopicTail, WorkerProcess, publish_setting, send, uid, wait_until
from topics import (
    CRM_OPPORTUNITIES,
    CUSTOMER_PLAN_CHANGES,
    CUSTOMER_SIGNUPS,
    SETTINGS_CRM_STAGES,
    SETTINGS_PLANS,
    SETTINGS_SIGNUP,
    SUSPENSION_COMMANDS,
    SUSPENSION_STATE,
)

pytestmark = pytest.mark.integration


async def test_plan_at_signup_and_by_plan_change(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail
) -> None:
    space, probation, standard = uid("space"), uid("plan"), uid("plan")
    await publish_setting(producer, workers, SETTINGS_PLANS.name, probation, builders.plan_setting(space, probation, True))
    await publish_setting(producer, workers, SETTINGS_PLANS.name, standard, builders.plan_setting(space, standard, False))
    at_signup, by_change, unaffected = uid("cust"), uid("cust"), uid("cust")
    joined = builders.signup(at_signup, space, plan=probation)
    await send(producer, CUSTOMER_SIGNUPS.name, at_signup, joined)
    await send(producer, CUSTOMER_SIGNUPS.name, by_change, builders.signup(by_change, space, plan=standard))
    # Events of different topics have no order: the change goes once the signup is decided.
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=by_change)
    changed = builders.plan_change(by_change, space, probation)
    await send(producer, CUSTOMER_PLAN_CHANGES.name, by_change, changed)
    to_standard = builders.plan_change(unaffected, space, standard)
    to_probation = builders.plan_change(unaffected, space, probation)
    await send(producer, CUSTOMER_PLAN_CHANGES.name, unaffected, to_standard)
    await send(producer, CUSTOMER_PLAN_CHANGES.name, unaffected, to_probation)

    for customer, topic, event in ((at_signup, CUSTOMER_SIGNUPS.name, joined),
                                   (by_change, CUSTOMER_PLAN_CHANGES.name, changed)):
        [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, suspended=True)
        assert state["reasons"] == ["plan"]
        [command] = await tail.wait_for(SUSPENSION_COMMANDS.name, customer_id=customer, action="suspend")
        assert command["cause"] == {"topic": topic, "event_id": event["event_id"], "invoice_id": None}
    # The signup on the standard plan was decided (not suspended) before the change suspended.
    assert [(s["version"], s["suspended"]) for s in tail.matching(SUSPENSION_STATE.name, customer_id=by_change)] == [
        (1, False), (2, True)]
    # The standard plan never fired: only the later probation change did. Its command comes after whatever
    # the standard change emitted (same topic and partition), so once it is out, every command is.
    [command] = await tail.wait_for(SUSPENSION_COMMANDS.name, customer_id=unaffected,
                                    cause={"topic": CUSTOMER_PLAN_CHANGES.name, "event_id": to_probation["event_id"],
                                           "invoice_id": None})
    assert tail.matching(SUSPENSION_COMMANDS.name, customer_id=unaffected) == [command]
    # The state was made by that command alone: suspended for the plan at its first version.
    [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=unaffected)
    assert (state["version"], state["suspended"], state["reasons"], state["last_command_id"]) == (
        1, True, ["plan"], command["command_id"])


async def test_plan_of_another_space_does_not_apply(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail
) -> None:
    space, other_space, plan, marker_plan = uid("space"), uid("space"), uid("plan"), uid("plan")
    await publish_setting(producer, workers, SETTINGS_PLANS.name, plan, builders.plan_setting(other_space, plan, True))
    await publish_setting(producer, workers, SETTINGS_PLANS.name, marker_plan, builders.plan_setting(space, marker_plan, True))
    customer = uid("cust")
    await send(producer, CUSTOMER_PLAN_CHANGES.name, customer, builders.plan_change(customer, space, plan))
    marker = builders.plan_change(customer, space, marker_plan)
    await send(producer, CUSTOMER_PLAN_CHANGES.name, customer, marker)
    await tail.wait_for(SUSPENSION_COMMANDS.name, customer_id=customer)
    # Only the marker change fired; the plan flagged in the other space did not.
    [command] = tail.matching(SUSPENSION_COMMANDS.name, customer_id=customer)
    assert command["cause"]["event_id"] == marker["event_id"]


async def test_crm_stage_rule_and_no_automatic_lift(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail, db: asyncpg.Pool
) -> None:
    space, board = uid("space"), uid("board")
    await publish_setting(producer, workers, SETTINGS_CRM_STAGES.name, f"{board}/bad-debt",
               builders.stage_setting(space, board, "bad-debt", True))
    await publish_setting(producer, workers, SETTINGS_CRM_STAGES.name, f"{board}/won", builders.stage_setting(space, board, "won", False))
    customer = uid("cust")
    await send(producer, CRM_OPPORTUNITIES.name, customer, builders.opportunity(customer, space, board, "won"))
    await send(producer, CRM_OPPORTUNITIES.name, customer, builders.opportunity(customer, space, board, "bad-debt"))
    [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer)
    assert state["reasons"] == ["crm_stage"]

    # Moving the opportunity on, or changing plan, never lifts. Each is followed by a marker on the same
    # topic and partition (same key) that does fire, so once a marker is applied, the event before it was too.
    flagged_plan = uid("plan")
    await publish_setting(producer, workers, SETTINGS_CRM_STAGES.name, f"{board}/collections",
                          builders.stage_setting(space, board, "collections", True))
    await publish_setting(producer, workers, SETTINGS_PLANS.name, flagged_plan,
                          builders.plan_setting(space, flagged_plan, True))
    await send(producer, CRM_OPPORTUNITIES.name, customer, builders.opportunity(customer, space, board, "won"))
    crm_marker = builders.opportunity(customer, space, board, "collections")
    await send(producer, CRM_OPPORTUNITIES.name, customer, crm_marker)
    await send(producer, CUSTOMER_PLAN_CHANGES.name, customer, builders.plan_change(customer, space, uid("plan")))
    plan_marker = builders.plan_change(customer, space, flagged_plan)
    await send(producer, CUSTOMER_PLAN_CHANGES.name, customer, plan_marker)

    [crm_marker_command] = await tail.wait_for(
        SUSPENSION_COMMANDS.name, customer_id=customer,
        cause={"topic": CRM_OPPORTUNITIES.name, "event_id": crm_marker["event_id"], "invoice_id": None})
    await wait_until(lambda: _processed(db, crm_marker_command["command_id"]), what="the CRM marker applied")
    [latest] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, reasons=["crm_stage", "plan"])
    assert latest["suspended"] and latest["version"] == 2
    commands = tail.matching(SUSPENSION_COMMANDS.name, customer_id=customer)
    assert sorted((c["action"], c["reason"]) for c in commands) == [
        ("suspend", "crm_stage"), ("suspend", "crm_stage"), ("suspend", "plan")]
    history = await db.fetch("SELECT action, outcome FROM command_history WHERE customer_id = $1 ORDER BY id",
                             customer)
    assert all(h["action"] == "suspend" for h in history) and len(history) == 3


async def _processed(db: asyncpg.Pool, command_id: str) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM processed_commands WHERE command_id = $1", command_id))


async def test_reasons_accumulate_and_suspended_at_is_kept(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail, db: asyncpg.Pool
) -> None:
    space, plan, board = uid("space"), uid("plan"), uid("board")
    await publish_setting(producer, workers, SETTINGS_SIGNUP.name, space, builders.signup_setting(space, True))
    await publish_setting(producer, workers, SETTINGS_PLANS.name, plan, builders.plan_setting(space, plan, True))
    await publish_setting(producer, workers, SETTINGS_CRM_STAGES.name, f"{board}/s1", builders.stage_setting(space, board, "s1", True))
    customer = uid("cust")
    await send(producer, CUSTOMER_SIGNUPS.name, customer, builders.signup(customer, space, plan=plan))
    # Events of different topics have no order between them: the CRM event goes once the signup's are in.
    await tail.wait_for(SUSPENSION_STATE.name, count=2, customer_id=customer)
    await send(producer, CRM_OPPORTUNITIES.name, customer, builders.opportunity(customer, space, board, "s1"))
    states = await tail.wait_for(SUSPENSION_STATE.name, count=3, customer_id=customer)
    assert [s["reasons"] for s in states] == [["signup"], ["signup", "plan"], ["signup", "plan", "crm_stage"]]
    assert [s["version"] for s in states] == [1, 2, 3]
    assert len({s["suspended_at"] for s in states}) == 1

    history = await db.fetch(
        "SELECT reason, actor, cause_topic, outcome FROM command_history WHERE customer_id = $1 ORDER BY id",
        customer)
    assert [(h["reason"], h["actor"], h["cause_topic"], h["outcome"]) for h in history] == [
        ("signup", "system", CUSTOMER_SIGNUPS.name, "changed"),
        ("plan", "system", CUSTOMER_SIGNUPS.name, "changed"),
        ("crm_stage", "system", CRM_OPPORTUNITIES.name, "changed"),
    ]


async def test_setting_turned_off_later_stops_the_rule_without_lifting(
    workers: WorkerProcess, producer: AIOKafkaProducer, tail: TopicTail
) -> None:
    space, plan = uid("space"), uid("plan")
    await publish_setting(producer, workers, SETTINGS_SIGNUP.name, space, builders.signup_setting(space, True))
    await publish_setting(producer, workers, SETTINGS_PLANS.name, plan, builders.plan_setting(space, plan, True))
    first = uid("cust")
    await send(producer, CUSTOMER_SIGNUPS.name, first, builders.signup(first, space))
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=first)

    await publish_setting(producer, workers, SETTINGS_SIGNUP.name, space, builders.signup_setting(space, False))
    second = uid("cust")
    await send(producer, CUSTOMER_SIGNUPS.name, second, builders.signup(second, space, plan=plan))
    [state] = await tail.wait_for(SUSPENSION_STATE.name, customer_id=second)
    assert state["reasons"] == ["plan"]  # the signup rule is off, the plan rule still on
    # Turning the rule off is not retroactive: the first customer is still suspended. A marker of the first
    # customer on the same topic and partition, after the rule went off, that does change the state (its
    # plan suspends): its state record follows any the rule going off would have caused.
    assert await suspending_signup(producer, tail, first, space, plan) == [
        (1, True, ["signup"]), (2, True, ["signup", "plan"])]
