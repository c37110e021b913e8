"""Issue 26: a space with known data, made through the service's real paths, for the overview's tests.

Five people sign up with names and emails (``customer.signups``, read by the triggers and the directory),
are suspended for known reasons (``suspension.commands``, the trusted path), have invoice jobs dropped in
two currencies (``invoice.jobs``), and two are lifted, one billing its missed jobs, one waiving them; a lift
and a suspension are scheduled; one bad ``customer.profile`` record of the space becomes a dead letter.
``Expected`` holds what the overview must then show.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer

from tests.support import now_iso, send, uid, wait_until
from topics import CUSTOMER_PROFILE, CUSTOMER_SIGNUPS, INVOICE_JOBS, SUSPENSION_COMMANDS


@dataclass
class Scenario:
    space: str
    ids: dict[str, str]  # short name -> customer id
    names: dict[str, str | None]
    emails: dict[str, str | None]
    # What the overview must show.
    suspended_now: int = 3
    now_by_reason: dict[str, int] = field(default_factory=lambda: {"manual": 2, "signup": 1, "plan": 1})
    suspensions: int = 5
    lifts: int = 2
    dropped: dict[str, tuple[int, str]] = field(default_factory=lambda: {"EUR": (3, "125.25"), "GBP": (1, "30.50")})
    billed: dict[str, tuple[int, str]] = field(default_factory=lambda: {"EUR": (1, "100.00"), "GBP": (1, "30.50")})
    waived: dict[str, tuple[int, str]] = field(default_factory=lambda: {"EUR": (1, "20.25")})
    scheduled_suspensions: int = 1
    scheduled_lifts: int = 1
    dead_letters: int = 1


def command(space: str, customer: str, action: str, reason: str = "manual", **extra: object) -> dict[str, object]:
    return {"command_id": str(uuid.uuid4()), "issued_at": now_iso(), "space_id": space, "customer_id": customer,
            "action": action, "reason": reason, "actor": "admin:scenario", **extra}


async def applied(db: asyncpg.Pool, command_ids: list[str]) -> None:
    async def done() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM processed_commands WHERE command_id = ANY($1::text[])",
                                      command_ids) == len(command_ids))

    await wait_until(done, 60, f"{len(command_ids)} command(s) applied")


async def send_commands(producer: AIOKafkaProducer, db: asyncpg.Pool, commands: list[dict[str, object]]) -> None:
    for item in commands:
        await send(producer, SUSPENSION_COMMANDS.name, str(item["customer_id"]), item)
    await applied(db, [str(item["command_id"]) for item in commands])


async def build(producer: AIOKafkaProducer, db: asyncpg.Pool) -> Scenario:
    space = uid("space")
    ids = {short: uid(short) for short in ("maria", "mario", "zoe", "anon", "formula")}
    names = {"maria": "Maria Harbour", "mario": "mario Rossi", "zoe": "Zoë Null", "anon": None,
             "formula": "=HYPERLINK(\"http://evil.test\")"}
    emails = {"maria": "maria@harbour.test", "mario": "mario@rossi.test", "zoe": "z@null.test", "anon": None,
              "formula": "+formula@evil.test"}
    for short, customer in ids.items():
        signup = {"event_id": uid("signup"), "occurred_at": now_iso(), "space_id": space, "customer_id": customer}
        signup |= {"display_name": names[short]} if names[short] else {}
        signup |= {"email": emails[short]} if emails[short] else {}
        await send(producer, CUSTOMER_SIGNUPS.name, customer, signup)

    async def known() -> bool:
        states = await db.fetchval("SELECT count(*) FROM customer_state WHERE space_id = $1", space)
        profiles = await db.fetchval("SELECT count(*) FROM customer_profiles WHERE space_id = $1", space)
        return bool(states == 5 and profiles == 4)

    await wait_until(known, 60, "the signups decided and their profiles kept")
    await send_commands(producer, db, [
        command(space, ids["maria"], "suspend", "plan", actor="system"),
        command(space, ids["mario"], "suspend", "crm_stage", actor="system"),
        command(space, ids["zoe"], "suspend", "manual", note="deposit unpaid"),
        command(space, ids["zoe"], "suspend", "signup", actor="system"),
        command(space, ids["anon"], "suspend", "manual"),
        command(space, ids["formula"], "suspend", "plan", actor="system", note="-1+1"),
    ])
    jobs = [(ids["maria"], "100.00", "EUR"), (ids["maria"], "30.50", "GBP"), (ids["mario"], "20.25", "EUR"),
            (ids["anon"], "5.00", "EUR")]
    job_ids = []
    for customer, amount, currency in jobs:
        job_id = uid("job")
        job_ids.append(job_id)
        await send(producer, INVOICE_JOBS.name, customer, {
            "job_id": job_id, "space_id": space, "customer_id": customer, "contract_id": uid("contract"),
            "period_start": "2026-11-01", "period_end": "2026-11-30", "amount": amount, "currency": currency})

    async def dropped() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM invoice_decisions WHERE job_id = ANY($1::text[]) "
                                      "AND status = 'dropped'", job_ids) == len(jobs))

    await wait_until(dropped, 60, "the invoice jobs dropped")
    later = datetime.now(UTC) + timedelta(days=3)
    await send_commands(producer, db, [
        command(space, ids["maria"], "lift", missed_invoices="bill", note="paid"),
        command(space, ids["mario"], "lift", missed_invoices="waive"),
        command(space, ids["anon"], "lift", at=later.isoformat().replace("+00:00", "Z")),
    ])
    await send_commands(producer, db, [
        command(space, ids["maria"], "suspend", at=(later - timedelta(days=1)).isoformat().replace("+00:00", "Z")),
    ])
    # A bad profile record naming the space (no updated_at): the directory dead-letters and counts it.
    bad = {"space_id": space, "customer_id": ids["zoe"], "display_name": "no moment"}
    await send(producer, CUSTOMER_PROFILE.name, ids["zoe"], bad)

    async def letter() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM dead_letters WHERE space_id = $1", space) == 1)

    await wait_until(letter, 60, "the bad profile record's dead letter counted")
    return Scenario(space, ids, names, emails)
