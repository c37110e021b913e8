"""The records the cases feed the workers: event mixes, command streams, invoice jobs."""

from __future__ import annotations

import random
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.plumbing import produce_all
from models import utc_iso
from topics import (
    CRM_OPPORTUNITIES,
    CUSTOMER_PLAN_CHANGES,
    CUSTOMER_SIGNUPS,
    SETTINGS_CRM_STAGES,
    SETTINGS_PLANS,
    SETTINGS_SIGNUP,
)
from workers.runtime.config import Settings


def event_mix(count: int, spaces: int = 20, seed: int = 1
              ) -> tuple[list[tuple[str, bytes, bytes]], list[tuple[str, str, dict[str, Any]]], int]:
    """Signup, plan and CRM events where about a third fire a rule; returns events, settings, commands expected."""
    rng = random.Random(seed)
    settings_records = []
    for s in range(spaces):
        space = f"bspace-{s}"
        settings_records.append((SETTINGS_SIGNUP.name, space, {"space_id": space, "keep_new_members_suspended": s % 3 == 0,
                                                              "updated_at": utc_iso()}))
        settings_records.append((SETTINGS_PLANS.name, f"probation-{s}", {
            "space_id": space, "plan_id": f"probation-{s}", "suspend_on_join": True, "updated_at": utc_iso()}))
        settings_records.append((SETTINGS_CRM_STAGES.name, f"sales-{s}/bad-debt", {
            "space_id": space, "board_id": f"sales-{s}", "stage_id": "bad-debt", "deactivate_account": True,
            "updated_at": utc_iso()}))
    events = []
    expected = 0
    for i in range(count):
        s = rng.randrange(spaces)
        space, customer = f"bspace-{s}", f"bc-{i}"
        base = {"event_id": f"be-{i}", "occurred_at": utc_iso(), "space_id": space, "customer_id": customer}
        kind = i % 3
        if kind == 0:
            plan = f"probation-{s}" if rng.random() < 0.2 else "standard"
            events.append((CUSTOMER_SIGNUPS.name, customer, base | {"email": f"{customer}@example.com", "plan_id": plan}))
            expected += max(1, (s % 3 == 0) + (plan != "standard"))  # a signup always gets a decision
        elif kind == 1:
            plan = f"probation-{s}" if rng.random() < 0.3 else "standard"
            events.append((CUSTOMER_PLAN_CHANGES.name, customer, base | {"plan_id": plan, "previous_plan_id": "x"}))
            expected += plan != "standard"
        else:
            stage = "bad-debt" if rng.random() < 0.3 else "won"
            events.append((CRM_OPPORTUNITIES.name, customer, base | {
                "opportunity_id": f"o-{i}", "board_id": f"sales-{s}", "stage_id": stage}))
            expected += stage == "bad-debt"
    encoded = [(topic, key.encode(), orjson.dumps(value)) for topic, key, value in events]
    return encoded, settings_records, expected


async def produce_settings(settings: Settings, records: list[tuple[str, str, dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, orjson.dumps(value), key=key.encode())
    finally:
        await producer.stop()


async def produce_event_mix(settings: Settings, count: int, seed: int = 1) -> int:
    """The settings and events of ``event_mix`` on their topics; returns the commands they will fire."""
    events, settings_records, expected = event_mix(count, seed=seed)
    await produce_settings(settings, settings_records)
    for topic in (CUSTOMER_SIGNUPS.name, CUSTOMER_PLAN_CHANGES.name, CRM_OPPORTUNITIES.name):
        await produce_all(settings, topic, [(k, v) for t, k, v in events if t == topic])
    return expected


def command_stream(count: int, customers: int, seed: int = 2, prefix: str = "") -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    records = []
    issued = utc_iso()
    for i in range(count):
        customer = f"{prefix}sc-{rng.randrange(customers)}"
        action = "suspend" if rng.random() < 0.7 else "lift"
        reason = rng.choice(["signup", "plan", "crm_stage", "manual"]) if action == "suspend" else "manual"
        records.append((customer.encode(), orjson.dumps({
            "command_id": f"{prefix}bcmd-{i}", "issued_at": issued, "space_id": "bench", "customer_id": customer,
            "action": action, "reason": reason, "actor": "system"})))
    return records


def invoice_jobs(count: int, customers: int, prefix: str = "") -> list[tuple[bytes, bytes]]:
    rng = random.Random(3)
    jobs = []
    for i in range(count):
        customer = f"jc-{rng.randrange(customers)}"
        jobs.append((customer.encode(), orjson.dumps({
            "job_id": f"{prefix}bjob-{i}", "space_id": "bench", "customer_id": customer, "contract_id": f"k-{customer}",
            "period_start": "2026-12-01", "period_end": "2026-12-31", "amount": "120.00", "currency": "EUR"})))
    return jobs
