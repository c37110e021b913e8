"""Issue 21: no oracle across spaces when acting, and an API that stays within its capacity.

Acting on a customer the service does not know in the token's space answers exactly as acting on
another space's customer (404, nothing published); markers prove nothing was sent. The capacity
tests run an API process of their own (no state worker: commands stay unapplied as long as a test
needs) with a small pool, and hold PostgreSQL locks to put a request or a bulk job exactly where
they want it; they wait for conditions, never for time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from suspensions import access
from suspensions.access import Role
from suspensions.local import processes
from tests.operator_support import (
    auth,
    console_session,
    form_token,
    history_actors,
    marker_applied,
    post_head,
    raw,
    register_command,
    register_customers,
    seed_customers,
)
from tests.support import TopicTail, WorkerProcess, uid, wait_for_http, wait_until
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration

NOT_FOUND = (404, {"detail": "not found"})


@dataclass
class Scene:
    space: str
    other_space: str
    operator: str
    operator_actor: str
    other: str  # an operator of the other space only
    theirs: str  # a customer of the other space


@pytest_asyncio.fixture
async def scene(db: asyncpg.Pool, producer: AIOKafkaProducer) -> Scene:
    space, other_space = uid("space"), uid("space")
    name = uid("operator")
    async with db.acquire() as conn:
        operator = await access.create_token(conn, name, Role.OPERATOR, [space])
        other = await access.create_token(conn, uid("other"), Role.OPERATOR, [other_space])
    theirs = uid("theirs")
    await register_customers(producer, db, other_space, [theirs])
    return Scene(space, other_space, operator, f"admin:{name}", other, theirs)


@pytest_asyncio.fixture
async def api(workers: WorkerProcess) -> AsyncIterator[httpx.AsyncClient]:
    await wait_for_http(f"http://127.0.0.1:{workers.api_port}/healthz")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{workers.api_port}", timeout=30) as client:
        yield client


def act(space: str, customer: str, action: str) -> str:
    return f"/api/v1/spaces/{space}/customers/{customer}/{action}"


def commands_by(tail: TopicTail, customer: str, actor: str) -> list[dict[str, Any]]:
    return [c for c in tail.matching(SUSPENSION_COMMANDS.name, customer_id=customer) if c["actor"] == actor]


async def test_acting_on_a_customer_unknown_here_answers_as_another_spaces(
        api: httpx.AsyncClient, scene: Scene, db: asyncpg.Pool, producer: AIOKafkaProducer, tail: TopicTail) -> None:
    nobody = uid("nobody")
    later = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    answers = {}
    for customer, space in ((nobody, scene.space), (scene.theirs, scene.space), (scene.theirs, scene.other_space)):
        for action, body, query in (("suspend", {}, ""), ("lift", {}, ""), ("suspend", {"note": "n"}, "?wait=true"),
                                    ("suspend", {"at": later}, ""), ("lift", {"at": later}, ""),
                                    ("suspend", {"until": later}, "")):
            response = await api.post(act(space, customer, action) + query, headers=auth(scene.operator), json=body)
            answers[(customer, space, action, str(body), query)] = (response.status_code, response.json())
    assert all(answer == NOT_FOUND for answer in answers.values()), answers

    # The console's forms answer the same for both.
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as console:
        await console_session(console, scene.operator)
        csrf = await form_token(console, f"/console/spaces/{scene.space}/customers")
        pages = set()
        for customer in (nobody, scene.theirs):
            for action, form in (("suspend", {}), ("lift", {"missed_invoices": "bill"})):
                response = await console.post(f"/console/spaces/{scene.space}/customers/{customer}/{action}",
                                              data={"csrf": csrf, "confirm": "yes", **form})
                assert response.status_code == 404, response.text
                pages.add(response.text)
        assert len(pages) == 1

    # Markers on both customers' partitions: nothing the operator asked for was published or applied.
    await marker_applied(producer, db, nobody, scene.space)
    await marker_applied(producer, db, scene.theirs, scene.other_space)
    for customer, registered in ((nobody, 1), (scene.theirs, 2)):
        await tail.wait_for(SUSPENSION_COMMANDS.name, customer_id=customer, action="register", count=registered)
        assert not commands_by(tail, customer, scene.operator_actor)
        assert scene.operator_actor not in {actor for _, actor in await history_actors(db, customer)}
    # The marker made `nobody` known (the trusted path may); now the operator's suspend goes through.
    made = await api.post(act(scene.space, nobody, "suspend") + "?wait=true", headers=auth(scene.operator), json={})
    assert made.status_code == 200 and made.json()["outcome"] == "changed"


async def test_bulk_lines_of_customers_unknown_here_are_not_found(
        api: httpx.AsyncClient, scene: Scene, db: asyncpg.Pool, producer: AIOKafkaProducer, tail: TopicTail) -> None:
    known = [uid("known") for _ in range(3)]
    await register_customers(producer, db, scene.space, known)
    nobody = uid("nobody")
    body = "customer_id,space_id\n" + "".join(f"{c},{scene.space}\n" for c in [*known, nobody, scene.theirs])

    async def finished(url: str, client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            job = (await client.get(url, headers=headers)).json()
            return job if job["status"] != "running" else None
        return dict(await wait_until(done, 60, f"{url} to finish"))

    started = await api.post(f"/api/v1/spaces/{scene.space}/bulk", content=body.encode(),
                             headers=auth(scene.operator) | {"Content-Type": "text/csv"})
    assert started.status_code == 202, started.text
    job = await finished(f"/api/v1/spaces/{scene.space}/bulk/{started.json()['bulk_id']}", api, auth(scene.operator))
    assert job["status"] == "done" and job["summary"] == {"changed": 3, "not found": 2}, job
    unknown = [entry for entry in job["report"] if "error" in entry]
    assert [{k: v for k, v in entry.items() if k not in ("line", "customer_id")} for entry in unknown] == [
        {"error": "not found", "problem": "not found"}] * 2
    assert {entry["customer_id"] for entry in unknown} == {nobody, scene.theirs}

    # The console's bulk upload: the same lines lifted, the same answer for the two.
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as console:
        await console_session(console, scene.operator)
        csrf = await form_token(console, f"/console/spaces/{scene.space}/bulk")
        uploaded = await console.post(f"/console/spaces/{scene.space}/bulk",
                                      data={"csrf": csrf, "action": "lift", "missed_invoices": "bill"},
                                      files={"file": ("members.csv", body.encode(), "text/csv")})
        assert uploaded.status_code == 303, uploaded.text
        progress = await finished(uploaded.headers["location"] + "/progress", console, {})
        assert progress["status"] == "done" and progress["summary"] == {"changed": 3, "not found": 2}

    await marker_applied(producer, db, nobody, scene.space)
    await marker_applied(producer, db, scene.theirs, scene.other_space)
    for customer, registered in ((nobody, 1), (scene.theirs, 2)):
        await tail.wait_for(SUSPENSION_COMMANDS.name, customer_id=customer, action="register", count=registered)
        assert not commands_by(tail, customer, scene.operator_actor)
    assert [action for action, actor in await history_actors(db, known[0]) if actor == scene.operator_actor] == [
        "suspend", "lift"]


# --- an API process of the test's own -------------------------------------------------------


@dataclass
class OwnApi:
    settings: Settings
    process: processes.WorkerProcess
    client: httpx.AsyncClient


@asynccontextmanager
async def own_api(isolated: Settings, tmp_path: Path, **env: str) -> AsyncIterator[OwnApi]:
    """`suspensions run api` alone on the isolated stack (no state worker), with these variables."""
    process = WorkerProcess(isolated, ("api",), env, log_path=tmp_path / "api.log").start()
    try:
        await wait_for_http(f"http://127.0.0.1:{process.api_port}/healthz")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{process.api_port}", timeout=60) as client:
            yield OwnApi(isolated, process, client)
    finally:
        process.stop()


async def new_token(settings: Settings, role: Role, space: str) -> tuple[str, str]:
    name = uid("tok")
    conn = await asyncpg.connect(settings.database_url)
    try:
        return name, await access.create_token(conn, name, role, [space])
    finally:
        await conn.close()


async def waiting_for_lock(conn: asyncpg.Connection, table: str) -> bool:
    """Whether some session waits for a lock on ``table`` (the request or job the test holds back)."""
    return bool(await conn.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = $1::regclass",
                                    table))


async def test_a_request_that_gets_no_connection_in_time_answers_503(isolated: Settings, tmp_path: Path) -> None:
    async with own_api(isolated, tmp_path, SUSPENSIONS_API_POOL_SIZE="1", SUSPENSIONS_API_POOL_TIMEOUT_S="0.5") as api:
        await _busy_pool_answers_503(api)


async def _busy_pool_answers_503(own_api: OwnApi) -> None:
    space = uid("space")
    _, token = await new_token(own_api.settings, Role.VIEWER, space)
    holder = await asyncpg.connect(own_api.settings.database_url)
    try:
        # The pool's one connection is taken by a request stuck behind the test's lock on the tokens.
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
        stuck = asyncio.create_task(own_api.client.get(f"/api/v1/spaces/{space}/customers", headers=auth(token)))
        await wait_until(lambda: waiting_for_lock(holder, "api_tokens"), 10, "the first request to hold the pool")
        started = time.monotonic()
        busy = await own_api.client.get(f"/api/v1/spaces/{space}/customers", headers=auth(token))
        took = time.monotonic() - started
        assert busy.status_code == 503, busy.text
        assert int(busy.headers["retry-after"]) >= 1 and "busy" in busy.json()["detail"]
        assert took < 5, f"a busy pool answered after {took:.1f}s"
        assert not stuck.done()
        await transaction.rollback()
        assert (await stuck).status_code == 200  # the held request completes once the lock is gone
    finally:
        await holder.close()
    assert (await own_api.client.get(f"/api/v1/spaces/{space}/customers", headers=auth(token))).status_code == 200


async def test_waiting_for_an_outcome_holds_no_connection(isolated: Settings, tmp_path: Path) -> None:
    """No state worker applies the command: the request waits its full timeout. Meanwhile the pool's
    only connection serves every other request (a wait holding it would make them answer 503)."""
    async with own_api(isolated, tmp_path, SUSPENSIONS_API_POOL_SIZE="1", SUSPENSIONS_API_POOL_TIMEOUT_S="1") as api:
        await _wait_holds_nothing(api)


async def _wait_holds_nothing(own_api: OwnApi) -> None:
    space, customer = uid("space"), uid("cust")
    await seed_customers(own_api.settings.database_url, space, [customer])
    _, token = await new_token(own_api.settings, Role.OPERATOR, space)
    tail = await TopicTail(own_api.settings, (SUSPENSION_COMMANDS.name,)).start()
    try:
        waiting = asyncio.create_task(own_api.client.post(
            act(space, customer, "suspend") + "?wait=true&timeout=4", headers=auth(token), json={}))
        await tail.wait_for(SUSPENSION_COMMANDS.name, customer_id=customer)  # published: the wait has begun
        answered = 0
        while not waiting.done():
            response = await own_api.client.get(f"/api/v1/spaces/{space}/customers/{customer}", headers=auth(token))
            assert response.status_code == 200, response.text
            answered += 1
        assert (await waiting).status_code == 504
        assert answered >= 5
    finally:
        await tail.stop()


def bulk_body(space: str, customers: list[str]) -> bytes:
    return ("customer_id,space_id\n" + "".join(f"{customer},{space}\n" for customer in customers)).encode()


async def start_bulk(client: httpx.AsyncClient, space: str, token: str, body: bytes) -> httpx.Response:
    return await client.post(f"/api/v1/spaces/{space}/bulk", content=body,
                             headers=auth(token) | {"Content-Type": "text/csv"})


async def bulk_job(client: httpx.AsyncClient, space: str, token: str, bulk_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/spaces/{space}/bulk/{bulk_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_token_runs_at_most_its_bulk_jobs_at_once(isolated: Settings, tmp_path: Path) -> None:
    """Jobs stay running (no state worker confirms their commands); the third of one token is refused,
    another token's is not; revoking the token stops its running jobs, which keep what they sent."""
    async with own_api(isolated, tmp_path, SUSPENSIONS_API_MAX_BULK_JOBS_PER_TOKEN="2") as api:
        await _bulk_jobs_per_token(api)


async def _bulk_jobs_per_token(own_api: OwnApi) -> None:
    space = uid("space")
    customers = [uid("cust") for _ in range(3)]
    await seed_customers(own_api.settings.database_url, space, customers)
    name, token = await new_token(own_api.settings, Role.OPERATOR, space)
    _, another = await new_token(own_api.settings, Role.OPERATOR, space)
    body = bulk_body(space, customers)
    first, second = [await start_bulk(own_api.client, space, token, body) for _ in range(2)]
    assert first.status_code == second.status_code == 202
    refused = await start_bulk(own_api.client, space, token, body)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1, refused.text
    # Refused before the upload is read: the answer comes while most of the declared body was never sent,
    # on the API and the console alike.
    port, declared = own_api.process.api_port, 4 * 1024 * 1024
    early = await raw(port, post_head(f"/api/v1/spaces/{space}/bulk", declared, "text/csv",
                                      Authorization=f"Bearer {token}"), body)
    assert early.status == 429 and int(early.headers["retry-after"]) >= 1, early
    async with httpx.AsyncClient(base_url=own_api.client.base_url, timeout=60) as console:
        await console_session(console, token)
        cookie = console.cookies["suspensions_session"]
    uploaded = await raw(port, post_head(f"/console/spaces/{space}/bulk", declared,
                                         "multipart/form-data; boundary=capacity",
                                         Cookie=f"suspensions_session={cookie}"), b"--capacity\r\n")
    assert uploaded.status == 429 and int(uploaded.headers["retry-after"]) >= 1, uploaded
    assert (await start_bulk(own_api.client, space, another, body)).status_code == 202

    ids = [first.json()["bulk_id"], second.json()["bulk_id"]]

    async def all_published() -> bool:
        jobs = [await bulk_job(own_api.client, space, another, bulk_id) for bulk_id in ids]
        return all(job["status"] == "running" and job["published"] == 3 for job in jobs)

    await wait_until(all_published, 30, "both jobs published and waiting for outcomes")
    conn = await asyncpg.connect(own_api.settings.database_url)
    try:
        assert await access.revoke_token(conn, name)
    finally:
        await conn.close()

    async def stopped() -> list[dict[str, Any]] | None:
        jobs = [await bulk_job(own_api.client, space, another, bulk_id) for bulk_id in ids]
        return jobs if all(job["status"] != "running" for job in jobs) else None

    for job in await wait_until(stopped, 30, "the revoked token's jobs to stop"):
        assert job["status"] == "failed" and job["error"].startswith("stopped") and "revoked" in job["error"]
        assert job["published"] == 3 and job["summary"] == {"unconfirmed": 3}
        assert [entry["customer_id"] for entry in job["report"]] == customers


async def test_a_revoked_tokens_bulk_job_stops_between_chunks(isolated: Settings, tmp_path: Path) -> None:
    """The job is held in its first chunk (the test locks the customers' table); the token is revoked
    meanwhile. The first chunk, checked before the revocation, goes out; the job stops before the second,
    says so, and the topic holds exactly the commands it says it published."""
    async with own_api(isolated, tmp_path) as api:
        await _revoked_between_chunks(api)


async def _revoked_between_chunks(own_api: OwnApi) -> None:
    space = uid("space")
    customers = [f"{space}-{i:05d}" for i in range(1_500)]  # two chunks: 1,000 and 500
    await seed_customers(own_api.settings.database_url, space, customers)
    name, token = await new_token(own_api.settings, Role.OPERATOR, space)
    _, viewer = await new_token(own_api.settings, Role.VIEWER, space)
    holder = await asyncpg.connect(own_api.settings.database_url)
    tail = await TopicTail(own_api.settings, (SUSPENSION_COMMANDS.name,)).start()
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE customer_state IN ACCESS EXCLUSIVE MODE")
        started = await start_bulk(own_api.client, space, token, bulk_body(space, customers))
        assert started.status_code == 202, started.text
        bulk_id = started.json()["bulk_id"]
        await wait_until(lambda: waiting_for_lock(holder, "customer_state"), 10, "the job held in its first chunk")
        assert await access.revoke_token(holder, name)  # committed with the lock's transaction below
        await transaction.commit()

        async def ended() -> dict[str, Any] | None:
            job = await bulk_job(own_api.client, space, viewer, bulk_id)
            return job if job["status"] != "running" else None

        job = await wait_until(ended, 30, "the job to stop")
        assert job["status"] == "failed" and job["error"].startswith("stopped") and "revoked" in job["error"]
        assert job["published"] == 1_000 and job["lines"] == 1_500
        assert job["summary"] == {"unconfirmed": 1_000, "not sent": 500}
        sent = {entry["customer_id"] for entry in job["report"] if entry.get("command_id")}
        assert sent == set(customers[:1_000])

        # A marker on every partition behind the job's records: once all are read, so is all it sent.
        producer = AIOKafkaProducer(bootstrap_servers=own_api.settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            partitions = sorted(await producer.partitions_for(SUSPENSION_COMMANDS.name))
            for partition in partitions:
                marker = register_command(f"marker-{partition}", space) | {"actor": "admin:marker"}
                await producer.send_and_wait(SUSPENSION_COMMANDS.name, key=f"marker-{partition}".encode(),
                                             value=orjson.dumps(marker), partition=partition)
        finally:
            await producer.stop()
        await tail.wait_for(SUSPENSION_COMMANDS.name, count=len(partitions), actor="admin:marker")
        published = {c["customer_id"] for c in tail.matching(SUSPENSION_COMMANDS.name, actor=f"admin:{name}")}
        assert published == sent
    finally:
        await tail.stop()
        await holder.close()
