"""People by name (issue 26): a page of 50 found by a prefix of a name, an email or an id, in a space of
``customers`` (100,000 in a full or quick run), each with a profile; target p99 < 50 ms.

The query is the console's and the API's own (``suspensions.people.people_page``, sorted by name), on one
connection, after the space is seeded with COPY and analysed. The baseline is the same page found by a
substring (``ILIKE '%q%'``), which no index serves: what search cost before the prefix indexes.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from bench.figures import Figure, percentiles
from models import CustomerState, Reason
from suspensions import people
from suspensions.local.seed import copy_states
from workers.runtime.config import Settings

FIRST = ("Maria", "Mario", "Marta", "Jan", "Johanna", "Ahmed", "Aiko", "Chloé", "Zoë", "Lars", "Nadia", "Omar",
         "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Ursula", "Vera", "Wen", "Xavier", "Yusuf", "Ilse", "Bob")
LAST = ("Harbour", "Lopez", "Rossi", "Nguyen", "Okafor", "Schmidt", "Dubois", "Kowalski", "Tanaka", "Silva",
        "Jensen", "Haddad", "Novak", "Ivanova", "García", "Murphy")
SEARCHES = 400


def person(index: int) -> tuple[str, str]:
    first, last = FIRST[index % len(FIRST)], LAST[(index // len(FIRST)) % len(LAST)]
    return f"{first} {last} {index}", f"{first.lower()}.{last.lower()}{index}@example.test"


async def seed(conn: asyncpg.Connection, space: str, customers: int) -> list[str]:
    now = datetime.now(UTC)
    ids = [f"{space}-{i:07d}" for i in range(customers)]
    await copy_states(conn, [CustomerState(customer, space, i % 5 == 0, (Reason.MANUAL,) if i % 5 == 0 else (),
                                           now if i % 5 == 0 else None, None, 1, now, "seed")
                             for i, customer in enumerate(ids)])
    await conn.copy_records_to_table(
        "customer_profiles", columns=["space_id", "customer_id", "display_name", "email", "updated_at", "source"],
        records=[(space, customer, *person(i), now, "bench") for i, customer in enumerate(ids)])
    await conn.execute("ANALYZE customer_state; ANALYZE customer_profiles")
    return ids


def prefixes(ids: list[str], customers: int, rng: random.Random) -> list[str]:
    """What people type: 1 to 4 letters of a name, the start of an email, of an id; any case."""
    asked = []
    for _ in range(SEARCHES):
        name, email = person(rng.randrange(customers))
        kind = rng.randrange(3)
        text = name if kind == 0 else email if kind == 1 else ids[rng.randrange(customers)]
        cut = text[:rng.randint(1, 4)] if kind < 2 else text[:rng.randint(len(text) - 6, len(text))]
        asked.append(cut.upper() if rng.random() < 0.3 else cut)
    return asked


async def substring_page(conn: asyncpg.Connection, space: str, text: str) -> None:
    await conn.fetch(
        "SELECT s.customer_id, p.display_name FROM customer_state s LEFT JOIN customer_profiles p "
        "ON p.space_id = s.space_id AND p.customer_id = s.customer_id WHERE s.space_id = $1 AND "
        "(s.customer_id ILIKE $2 OR p.display_name ILIKE $2 OR p.email ILIKE $2) "
        "ORDER BY lower(p.display_name) NULLS LAST, s.customer_id LIMIT 51", space, f"%{text}%")


async def search_case(settings: Settings, customers: int) -> Figure:
    space = f"search-{uuid.uuid4().hex[:6]}"
    rng = random.Random(26)
    conn = await asyncpg.connect(settings.database_url)
    try:
        ids = await seed(conn, space, customers)
        asked = prefixes(ids, customers, rng)
        for text in asked[:20]:  # warm the caches and the prepared statements
            await people.people_page(conn, space, search=text, limit=51)
        latencies, empty = [], 0
        started = time.perf_counter()
        for text in asked:
            began = time.perf_counter()
            page = await people.people_page(conn, space, search=text, limit=51)
            latencies.append(time.perf_counter() - began)
            empty += not page
        seconds = time.perf_counter() - started
        baseline_started = time.perf_counter()
        for text in asked[:50]:
            await substring_page(conn, space, text)
        baseline_seconds = time.perf_counter() - baseline_started
    finally:
        await conn.close()
    p50, p99 = percentiles(latencies)
    return Figure(f"search a page of 50 by name, email or id prefix ({customers:,} customers)", len(asked),
                  len(asked) / seconds, "substring search (ILIKE, no index)", 50 / baseline_seconds, p50_ms=p50,
                  p99_ms=p99, seconds=seconds, target="p99 < 50 ms", met=p99 < 50,
                  notes=[f"{empty} of {len(asked)} searches found nobody"])
