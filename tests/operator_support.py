"""Helpers of the operator API and console tests: customers the service knows, markers, what was applied.

The API publishes nothing for a customer the service does not know in the token's space, so a test
makes its customers known first, the way the trusted path does: a `register` decision on
`suspension.commands` (what a signup that suspends nothing yields), applied by the session's state
worker; or, on a stack with no state worker, rows written as that worker would write them.

A refused request is proven to have sent nothing with a marker: a command for the same customer
(the same key, so the same partition, applied after anything published before it) sent through an
allowed path; once the marker is applied, a command of the refused request would have been too.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaProducer

from models import CustomerState
from tests.support import now_iso, send, wait_until
from topics import SUSPENSION_COMMANDS
from workers.runtime.db import repository


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register_command(customer: str, space: str) -> dict[str, object]:
    return {"command_id": str(uuid.uuid4()), "issued_at": now_iso(), "space_id": space, "customer_id": customer,
            "action": "register", "reason": "signup", "actor": "system"}


async def register_customers(producer: AIOKafkaProducer, db: asyncpg.Pool, space: str, customers: list[str],
                             timeout_s: float = 60.0) -> None:
    """Make the customers known in ``space`` through Kafka and wait until the state worker holds them."""
    sent = [await producer.send(SUSPENSION_COMMANDS.name, orjson.dumps(register_command(customer, space)),
                                key=customer.encode()) for customer in customers]
    await asyncio.gather(*sent)  # every one acknowledged

    async def known() -> bool:
        async with db.acquire() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM customer_state WHERE space_id = $1 AND customer_id = ANY($2::text[])",
                space, customers)
        return bool(count == len(customers))

    await wait_until(known, timeout_s, f"{len(customers)} customer(s) of {space} registered")


async def seed_customers(database_url: str, space: str, customers: list[str]) -> None:
    """Customers known in ``space`` on a stack where no state worker runs: their rows, as it writes them."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        await repository.copy_states(conn, [CustomerState(customer, space, False, (), None, None, 1, now, "seed")
                                            for customer in customers])
    finally:
        await conn.close()


async def history_actors(db: asyncpg.Pool, customer: str) -> list[tuple[str, str]]:
    """(action, actor) of every command applied to the customer, in order."""
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT action, actor FROM command_history WHERE customer_id = $1 ORDER BY id",
                                customer)
    return [(row["action"], row["actor"]) for row in rows]


async def marker_applied(producer: AIOKafkaProducer, db: asyncpg.Pool, customer: str, space: str) -> None:
    """Send a `register` for the customer through Kafka (no-op or first state) and wait until it is applied."""
    command = register_command(customer, space)
    await send(producer, SUSPENSION_COMMANDS.name, customer, command)

    async def applied() -> bool:
        async with db.acquire() as conn:
            return bool(await conn.fetchval("SELECT 1 FROM processed_commands WHERE command_id = $1",
                                            command["command_id"]))

    await wait_until(applied, 30, f"the marker for {customer} to be applied")


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def console_session(client: httpx.AsyncClient, token: str) -> None:
    """Sign the client in to the console (its cookie jar keeps the session)."""
    response = await client.post("/signin", data={"token": token, "next": "/"}, follow_redirects=False)
    assert response.status_code == 303, response.text


async def form_token(client: httpx.AsyncClient, page: str) -> str:
    """The session's form token, as the console's own pages carry it."""
    response = await client.get(page)
    assert response.status_code == 200, response.text
    found = CSRF.search(response.text)
    assert found, f"no form token on {page}"
    return found.group(1)
