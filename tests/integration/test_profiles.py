"""Issue 26: people by name. Names and emails from signups and ``customer.profile`` are kept per customer, last
write wins by the record's moment; search finds them by prefix, case-insensitive, in the token's space only;
``suspensions customers forget`` erases them for good (a replay does not bring them back), recorded with who."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from models import CustomerState, Reason, utc_iso
from suspensions import access, people
from suspensions.access import Role
from suspensions.local.seed import copy_states
from tests.operator_support import auth
from tests.support import WorkerProcess, run_cli, send, uid, wait_for_http, wait_until
from topics import CUSTOMER_PROFILE, CUSTOMER_SIGNUPS
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module")
async def api(workers: WorkerProcess) -> AsyncIterator[httpx.AsyncClient]:
    await wait_for_http(f"http://127.0.0.1:{workers.api_port}/healthz")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{workers.api_port}", timeout=30) as client:
        yield client


def moment(minutes: int) -> str:
    return utc_iso(datetime(2026, 11, 1, 9, 0, tzinfo=UTC) + timedelta(minutes=minutes))


def signup(space: str, customer: str, at: str, **person: str) -> dict[str, str]:
    return {"event_id": uid("signup"), "occurred_at": at, "space_id": space, "customer_id": customer, **person}


def profile(space: str, customer: str, at: str, **person: str | None) -> dict[str, str | None]:
    return {"space_id": space, "customer_id": customer, "updated_at": at, **person}


async def stored(db: asyncpg.Pool, space: str, customer: str) -> tuple[str | None, str | None] | None:
    row = await db.fetchrow("SELECT display_name, email FROM customer_profiles WHERE space_id = $1 "
                            "AND customer_id = $2", space, customer)
    return None if row is None else (row["display_name"], row["email"])


async def until_stored(db: asyncpg.Pool, space: str, customer: str, expected: tuple[str | None, str | None]) -> None:
    async def check() -> bool:
        return await stored(db, space, customer) == expected

    await wait_until(check, 30, f"the profile of {customer} to be {expected}")


def same_partition(customer: str, settings: Settings) -> str:
    """A new customer id whose records land on the same partition as ``customer``'s (the default partitioner)."""
    partitions = list(range(settings.topic_partitions))
    wanted = DefaultPartitioner()(customer.encode(), partitions, partitions)
    while True:
        candidate = uid("marker")
        if DefaultPartitioner()(candidate.encode(), partitions, partitions) == wanted:
            return candidate


async def test_the_latest_profile_wins_and_forget_erases_it_for_good(
        producer: AIOKafkaProducer, db: asyncpg.Pool, settings: Settings, workers: WorkerProcess) -> None:
    space, customer = uid("space"), uid("member")
    await send(producer, CUSTOMER_SIGNUPS.name, customer,
               signup(space, customer, moment(0), display_name="Maria Lopez", email="maria@old.test"))
    await until_stored(db, space, customer, ("Maria Lopez", "maria@old.test"))
    # A later profile replaces the whole profile; an older one (late, or a replay) changes nothing.
    await send(producer, CUSTOMER_PROFILE.name, customer,
               profile(space, customer, moment(10), display_name="María López", email="maria@new.test"))
    await until_stored(db, space, customer, ("María López", "maria@new.test"))
    older = profile(space, customer, moment(5), display_name="Old Name", email=None)
    await send(producer, CUSTOMER_PROFILE.name, customer, older)
    # The marker: another customer's profile on the same partition, read after the older one.
    marker = same_partition(customer, settings)
    await send(producer, CUSTOMER_PROFILE.name, marker, profile(space, marker, moment(0), display_name="Marker"))
    await until_stored(db, space, marker, ("Marker", None))
    assert await stored(db, space, customer) == ("María López", "maria@new.test")
    assert await db.fetchval("SELECT updated_at FROM customer_profiles WHERE customer_id = $1",
                             customer) == datetime.fromisoformat(moment(10))

    forgotten = await asyncio.to_thread(run_cli, settings, "customers", "forget", customer, "--space", space,
                                        "--actor", "admin:dpo")
    assert forgotten.returncode == 0, forgotten.stderr
    assert await stored(db, space, customer) == (None, None)
    erasures = await db.fetch("SELECT actor FROM profile_erasures WHERE space_id = $1 AND customer_id = $2",
                              space, customer)
    assert [row["actor"] for row in erasures] == ["admin:dpo"]
    shown = await asyncio.to_thread(run_cli, settings, "history", customer, "--space", space)
    assert shown.returncode == 0 and "erased" in shown.stdout and "admin:dpo" in shown.stdout, shown.stdout
    # A replay of everything before the erasure brings nothing back; markers behind it on the same partitions
    # of both topics prove it was read.
    await send(producer, CUSTOMER_SIGNUPS.name, customer,
               signup(space, customer, moment(0), display_name="Maria Lopez", email="maria@old.test"))
    await send(producer, CUSTOMER_PROFILE.name, customer, older)
    after_signup, after_profile = same_partition(customer, settings), same_partition(customer, settings)
    await send(producer, CUSTOMER_SIGNUPS.name, after_signup,
               signup(space, after_signup, moment(0), display_name="Marker"))
    await send(producer, CUSTOMER_PROFILE.name, after_profile,
               profile(space, after_profile, moment(0), display_name="Marker"))
    await until_stored(db, space, after_signup, ("Marker", None))
    await until_stored(db, space, after_profile, ("Marker", None))
    assert await stored(db, space, customer) == (None, None)
    unknown = await asyncio.to_thread(run_cli, settings, "customers", "forget", uid("nobody"), "--space", space,
                                      "--actor", "admin:dpo")
    assert unknown.returncode == 1


async def test_search_by_name_email_or_id_prefix_in_the_tokens_space_only(
        api: httpx.AsyncClient, producer: AIOKafkaProducer, db: asyncpg.Pool) -> None:
    space, other = uid("space"), uid("space")
    people = {uid("m"): ("Maria Harbour", "harbour@coworking.test"), uid("m"): ("mario 100%_sure", "zed@x.test"),
              uid("m"): ("Zoë", "MARIA.z@x.test"), uid("m"): ("Bob", "bob@x.test")}
    stranger = uid("m")
    for customer, (name, email) in people.items():
        await send(producer, CUSTOMER_SIGNUPS.name, customer,
                   signup(space, customer, utc_iso(), display_name=name, email=email))
    await send(producer, CUSTOMER_SIGNUPS.name, stranger,
               signup(other, stranger, utc_iso(), display_name="Maria Elsewhere", email="maria@else.test"))

    async def known() -> bool:
        count = await db.fetchval(
            "SELECT count(*) FROM customer_state s JOIN customer_profiles p USING (space_id, customer_id) "
            "WHERE s.customer_id = ANY($1::text[])", [*people, stranger])
        return bool(count == len(people) + 1)

    await wait_until(known, 60, "the signups decided and their profiles kept")
    async with db.acquire() as conn:
        viewer = await access.create_token(conn, uid("viewer"), Role.VIEWER, [space])
    by_id = {name: customer for customer, (name, _) in people.items()}

    async def found(search: str) -> set[str]:
        answer = await api.get(f"/api/v1/spaces/{space}/customers", params={"search": search},
                               headers=auth(viewer))
        assert answer.status_code == 200, answer.text
        page = answer.json()
        named = {p["customer_id"]: p["display_name"] for p in page["profiles"]}
        assert set(named) == {c["customer_id"] for c in page["customers"]}  # every one of them has a profile
        return set(named.values())

    assert await found("MARI") == {"Maria Harbour", "mario 100%_sure", "Zoë"}  # name, name, email
    assert await found("maria") == {"Maria Harbour", "Zoë"}
    assert await found("harbour@") == {"Maria Harbour"}
    assert await found("mario 100%_") == {"mario 100%_sure"}  # wildcards are literal
    assert await found("mario 1000") == set()
    assert await found("%") == set()
    assert await found(by_id["Bob"].upper()) == {"Bob"}  # by id, case-insensitive
    assert await found("M-") == {name for name, _ in people.values()}  # never the other space's Maria


async def test_a_prefix_matching_thousands_pages_through_every_match_once(db: asyncpg.Pool) -> None:
    """More than ``people.SELECTIVE`` matches: shown in blocks (names, then emails only, then ids only), each in
    its own order; paging through them meets every match exactly once and nobody else."""
    space, now = uid("space"), datetime.now(UTC)
    names = {f"{space}-n{i:04d}": (f"Mara {i:04d}", f"x{i}@example.test") for i in range(people.SELECTIVE + 50)}
    by_email = {f"{space}-e{i}": ("Zed", f"mara{i}@example.test") for i in range(3)}
    by_id = {f"mara-{space}-{i}": (None, None) for i in range(2)}
    others = {f"{space}-o{i}": ("Olga", "olga@example.test") for i in range(5)}
    everyone = names | by_email | by_id | others
    async with db.acquire() as conn:
        suspended = set(list(everyone)[::3])
        await copy_states(conn, [CustomerState(customer, space, customer in suspended,
                                               (Reason.MANUAL,) if customer in suspended else (),
                                               now if customer in suspended else None, None, 1, now, "seed")
                                 for customer in everyone])
        await conn.copy_records_to_table(
            "customer_profiles", columns=["space_id", "customer_id", "display_name", "email", "updated_at", "source"],
            records=[(space, c, name, email, now, "test") for c, (name, email) in everyone.items() if name])
        assert await people.in_blocks(conn, space, "MARA")

        async def every_page(search: str, sort: people.Sort) -> list[str]:
            seen: list[str] = []
            while page := await people.people_page(conn, space, search=search, sort=sort, offset=len(seen),
                                                   limit=50):
                seen += [person.state.customer_id for person in page]
            return seen

        found = await every_page("MARA", "name")
        by_status = await every_page("", "status")  # no search: walked, the suspended first
        by_name = await every_page("", "name")  # no search: the name index, then those without a name
    assert len(found) == len(set(found)) == len(names) + len(by_email) + len(by_id)
    assert found == sorted(names) + sorted(by_email, key=lambda c: by_email[c][1]) + sorted(by_id)
    assert by_status == sorted(suspended) + sorted(set(everyone) - suspended)
    named = [c for c in everyone if everyone[c][0]]
    assert by_name == sorted(named, key=lambda c: (str(everyone[c][0]).lower(), c)) + sorted(by_id)
