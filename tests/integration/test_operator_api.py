"""Issue 13: the operator API over real HTTP, against the session's own process (workers and API)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from suspensions import access
from suspensions.access import TOKEN_PREFIX, Role
from suspensions.local.processes import metric_total
from tests.operator_support import auth, history_actors, register_customers, seed_customers
from tests.support import TopicTail, WorkerProcess, uid, wait_for_http, wait_until
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration


@dataclass
class Tokens:
    space: str
    other_space: str
    admin: str
    operator: str
    operator_name: str
    viewer: str
    viewer_name: str
    other: str  # an operator of the other space only


@pytest_asyncio.fixture(scope="module")
async def tokens(db: asyncpg.Pool) -> Tokens:
    space, other = uid("space"), uid("space")
    names = {role: uid(role) for role in ("admin", "operator", "viewer", "other")}
    async with db.acquire() as conn:
        made = {
            "admin": await access.create_token(conn, names["admin"], Role.ADMIN, [space, other]),
            "operator": await access.create_token(conn, names["operator"], Role.OPERATOR, [space]),
            "viewer": await access.create_token(conn, names["viewer"], Role.VIEWER, [space]),
            "other": await access.create_token(conn, names["other"], Role.OPERATOR, [other]),
        }
    return Tokens(space, other, made["admin"], made["operator"], names["operator"], made["viewer"], names["viewer"],
                  made["other"])


@pytest_asyncio.fixture(scope="module")
async def api(workers: WorkerProcess) -> AsyncIterator[httpx.AsyncClient]:
    await wait_for_http(f"http://127.0.0.1:{workers.api_port}/healthz")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{workers.api_port}", timeout=30) as client:
        yield client


def path(space: str, customer: str = "", tail: str = "") -> str:
    return f"/api/v1/spaces/{space}/customers" + (f"/{customer}" if customer else "") + tail


async def test_who_may_do_what(api: httpx.AsyncClient, tokens: Tokens, workers: WorkerProcess,
                               db: asyncpg.Pool, tail: TopicTail, producer: AIOKafkaProducer) -> None:
    customer = uid("cust")
    await register_customers(producer, db, tokens.space, [customer])
    failures_before = await asyncio.to_thread(metric_total, workers.http_port, "suspensions_auth_failures_total")
    assert (await api.get(path(tokens.space))).status_code == 401
    assert (await api.get(path(tokens.space), headers=auth("sus_not-a-token"))).status_code == 401
    failures = await asyncio.to_thread(metric_total, workers.http_port, "suspensions_auth_failures_total")
    assert failures == failures_before + 2  # each refused request counted once

    # An operator acts; the actor is taken from its token, whatever the request says.
    accepted = await api.post(path(tokens.space, customer, "/suspend"), headers=auth(tokens.operator),
                              json={"note": "unpaid deposit", "actor": "admin:someone-else"})
    assert accepted.status_code == 202 and accepted.json()["command_id"]
    [command] = await tail.wait_for(SUSPENSION_COMMANDS.name, customer_id=customer, action="suspend")
    assert command["actor"] == f"admin:{tokens.operator_name}" and command["source"] == "operator_api"
    applied = await api.post(path(tokens.space, customer, "/lift") + "?wait=true", headers=auth(tokens.operator),
                             json={"note": "paid", "missed_invoices": "waive"})
    assert applied.status_code == 200, applied.text
    assert applied.json()["outcome"] == "changed" and applied.json()["state"]["suspended"] is False

    # A viewer reads but may not act: after its refused suspend, a marker for the same customer (same
    # partition, so applied after anything published before it) is applied, and nothing of the viewer.
    assert (await api.get(path(tokens.space, customer), headers=auth(tokens.viewer))).status_code == 200
    refused = await api.post(path(tokens.space, customer, "/suspend"), headers=auth(tokens.viewer), json={})
    assert refused.status_code == 403
    marker = await api.post(path(tokens.space, customer, "/lift") + "?wait=true", headers=auth(tokens.operator),
                            json={"note": "marker"})
    assert marker.status_code == 200 and marker.json()["outcome"] == "noop"
    await tail.wait_for(SUSPENSION_COMMANDS.name, command_id=marker.json()["command_id"])  # read by the tail too
    viewer = f"admin:{tokens.viewer_name}"
    assert not [c for c in tail.matching(SUSPENSION_COMMANDS.name, customer_id=customer) if c["actor"] == viewer]
    history = (await api.get(path(tokens.space, customer, "/history"), headers=auth(tokens.viewer))).json()
    operator = f"admin:{tokens.operator_name}"
    assert [(h["action"], h["actor"], h["outcome"]) for h in history] == [
        ("register", "system", "changed"), ("suspend", operator, "changed"), ("lift", operator, "changed"),
        ("lift", operator, "noop")]
    assert history[-1]["note"] == "marker"
    # Only admins see the lag.
    assert (await api.get("/api/v1/lag", headers=auth(tokens.operator))).status_code == 403
    lag = await api.get("/api/v1/lag", headers=auth(tokens.admin))
    assert lag.status_code == 200 and {g["group"] for g in lag.json()} >= {"suspensions-state"}


async def test_another_space_answers_as_nothing(api: httpx.AsyncClient, tokens: Tokens, db: asyncpg.Pool,
                                                producer: AIOKafkaProducer, tail: TopicTail) -> None:
    customer = uid("cust")
    await register_customers(producer, db, tokens.other_space, [customer])
    made = await api.post(path(tokens.other_space, customer, "/suspend") + "?wait=true", headers=auth(tokens.other),
                          json={})
    assert made.status_code == 200
    not_found = (404, {"detail": "not found"})

    async def answer(url: str) -> tuple[int, Any]:
        response = await api.get(url, headers=auth(tokens.operator))
        return response.status_code, response.json()

    # Each probe of the other space answers exactly as the same probe of nothing at all.
    nowhere = uid("space")
    pairs = [(path(tokens.other_space, customer), path(tokens.space, uid("nobody"))),
             (path(tokens.space, customer), path(tokens.space, uid("nobody"))),  # theirs, asked as ours
             (path(tokens.other_space), path(nowhere)),
             (path(tokens.other_space, customer, "/history"), path(tokens.space, uid("nobody"), "/history")),
             (path(tokens.space, customer, "/history"), path(tokens.space, uid("nobody"), "/history")),
             (f"/api/v1/spaces/{tokens.other_space}/invoices/dropped", f"/api/v1/spaces/{nowhere}/invoices/dropped")]
    for theirs, nothing in pairs:
        assert await answer(theirs) == await answer(nothing) == not_found, theirs
    acting = await api.post(path(tokens.other_space, customer, "/lift"), headers=auth(tokens.operator), json={})
    assert (acting.status_code, acting.json()) == not_found
    # The refused lift sent nothing: a marker lift by the space's own operator, on the same partition, is
    # the one that lifts, and no command of the refused operator reached the topic or the history.
    marker = await api.post(path(tokens.other_space, customer, "/lift") + "?wait=true", headers=auth(tokens.other),
                            json={"note": "marker"})
    assert marker.status_code == 200 and marker.json()["outcome"] == "changed"
    await tail.wait_for(SUSPENSION_COMMANDS.name, command_id=marker.json()["command_id"])  # read by the tail too
    refused_actor = f"admin:{tokens.operator_name}"
    assert not [c for c in tail.matching(SUSPENSION_COMMANDS.name, customer_id=customer)
                if c["actor"] == refused_actor]
    assert refused_actor not in {actor for _, actor in await history_actors(db, customer)}
    assert marker.json()["state"]["version"] == 3  # registered, suspended, lifted by the marker: nothing between


async def test_a_well_formed_token_with_a_wrong_secret_is_refused(api: httpx.AsyncClient, tokens: Tokens) -> None:
    assert (await api.get(path(tokens.space), headers=auth(tokens.viewer))).status_code == 200
    secret = tokens.viewer.removeprefix(TOKEN_PREFIX)
    altered = TOKEN_PREFIX + secret[:-4] + ("AAAA" if secret[-4:] != "AAAA" else "BBBB")
    for token in (altered, TOKEN_PREFIX + secrets.token_urlsafe(32)):  # the shape of a real one, not its secret
        refused = await api.get(path(tokens.space), headers=auth(token))
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", token


async def test_bad_input_is_422_field_by_field_and_nothing_is_sent(api: httpx.AsyncClient, tokens: Tokens,
                                                                   tail: TopicTail, db: asyncpg.Pool,
                                                                   producer: AIOKafkaProducer) -> None:
    customer = uid("cust")
    await register_customers(producer, db, tokens.space, [customer])
    long_note = await api.post(path(tokens.space, customer, "/suspend"), headers=auth(tokens.operator),
                               json={"note": "x" * 2001})
    assert long_note.status_code == 422 and long_note.json()["detail"][0]["loc"] == ["body", "note"]
    bad_choice = await api.post(path(tokens.space, customer, "/lift"), headers=auth(tokens.operator),
                                json={"missed_invoices": "maybe"})
    assert bad_choice.status_code == 422 and bad_choice.json()["detail"][0]["loc"] == ["body", "missed_invoices"]
    past = await api.post(path(tokens.space, customer, "/suspend"), headers=auth(tokens.operator),
                          json={"at": "2020-01-01"})
    assert past.status_code == 422 and "not in the future" in past.json()["detail"][0]["msg"]
    too_long_id = "c" * 201
    long_id = await api.post(path(tokens.space, too_long_id, "/suspend"), headers=auth(tokens.operator), json={})
    assert long_id.status_code == 422 and "customer_id" in long_id.json()["detail"][0]["loc"]
    # A marker on the same partition (same key) behind them: none of them was published.
    marker = await api.post(path(tokens.space, customer, "/suspend") + "?wait=true", headers=auth(tokens.operator),
                            json={})
    assert marker.status_code == 200
    await tail.wait_for(SUSPENSION_COMMANDS.name, command_id=marker.json()["command_id"])
    assert [c["action"] for c in tail.matching(SUSPENSION_COMMANDS.name, customer_id=customer)] == ["register",
                                                                                                   "suspend"]


async def test_pages_are_stable_and_complete(api: httpx.AsyncClient, tokens: Tokens, db: asyncpg.Pool,
                                             producer: AIOKafkaProducer) -> None:
    space_customers = sorted(f"{uid('page')}" for _ in range(5))
    await register_customers(producer, db, tokens.space, space_customers)
    for customer in space_customers:
        response = await api.post(path(tokens.space, customer, "/suspend") + "?wait=true",
                                  headers=auth(tokens.operator), json={})
        assert response.status_code == 200
    seen, cursor = [], ""
    while True:
        page = (await api.get(path(tokens.space), params={"search": "page-", "limit": 2, "cursor": cursor,
                                                          "suspended": "true"}, headers=auth(tokens.viewer))).json()
        seen += [c["customer_id"] for c in page["customers"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == space_customers


async def test_bulk_csv_reports_every_line(api: httpx.AsyncClient, tokens: Tokens, db: asyncpg.Pool,
                                           producer: AIOKafkaProducer) -> None:
    customers = [uid("bulk") for _ in range(20)]
    noted = uid("bulk")  # known here, but its line's note holds control characters
    await register_customers(producer, db, tokens.space, [*customers, noted])
    # Hostile lines first: each is a malformed line of its own, and every line after them still goes out.
    body = ("customer_id,space_id,note\n"
            f"a\x00b,{tokens.space}\n"  # line 2: a NUL in the id (PostgreSQL cannot even compare it)
            f"{noted},{tokens.space},\"esc \x1b, form feed \x0c.\"\n"  # line 3
            + "".join(f"{c},{tokens.space},bulk test\n" for c in customers))
    body += "only-one-column\n" + f"{uid('x')},{tokens.other_space}\n"
    started = await api.post(f"/api/v1/spaces/{tokens.space}/bulk", content=body.encode(),
                             headers=auth(tokens.operator) | {"Content-Type": "text/csv"})
    assert started.status_code == 202
    bulk_id = started.json()["bulk_id"]

    async def done() -> dict[str, Any] | None:
        job = (await api.get(f"/api/v1/spaces/{tokens.space}/bulk/{bulk_id}", headers=auth(tokens.viewer))).json()
        return job if job["status"] != "running" else None

    job = await wait_until(done, 60, "the bulk job to finish")
    assert job["status"] == "done" and job["summary"] == {"changed": 20, "malformed": 4}, job
    errors = {entry["line"]: entry["error"] for entry in job["report"] if "error" in entry}
    assert set(errors) == {2, 3, 24, 25} and "columns" in errors[24] and "not this space" in errors[25]
    assert "customer_id or space_id holds a control character" in errors[2]
    assert "note holds a control character" in errors[3]
    state = await api.get(path(tokens.space, noted), headers=auth(tokens.viewer))
    assert state.status_code == 200 and state.json()["suspended"] is False
    assert (await api.get(f"/api/v1/spaces/{tokens.other_space}/bulk/{bulk_id}",
                          headers=auth(tokens.admin))).status_code == 404


async def test_revoked_token_stops_at_once(api: httpx.AsyncClient, db: asyncpg.Pool, tokens: Tokens) -> None:
    name = uid("temp")
    async with db.acquire() as conn:
        token = await access.create_token(conn, name, Role.VIEWER, [tokens.space])
    assert (await api.get(path(tokens.space), headers=auth(token))).status_code == 200
    async with db.acquire() as conn:
        assert await access.revoke_token(conn, name)
    assert (await api.get(path(tokens.space), headers=auth(token))).status_code == 401


async def test_wait_answers_504_when_nothing_applies(isolated: Settings, tmp_path: Path) -> None:
    """An API whose commands no state worker applies (none runs here): ?wait=true answers 504 in time."""
    conn = await asyncpg.connect(isolated.database_url)
    try:
        token = await access.create_token(conn, uid("op"), Role.OPERATOR, ["lonely"])
    finally:
        await conn.close()
    customer = uid("cust")
    await seed_customers(isolated.database_url, "lonely", [customer])
    process = WorkerProcess(isolated, ("api",), log_path=tmp_path / "api.log").start()
    try:
        await wait_for_http(f"http://127.0.0.1:{process.api_port}/healthz")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{process.api_port}", timeout=30) as client:
            started = time.monotonic()
            response = await client.post(path("lonely", customer, "/suspend") + "?wait=true&timeout=1",
                                         headers=auth(token), json={})
            assert response.status_code == 504 and "not applied in time" in response.json()["detail"]
            assert time.monotonic() - started < 10
        count = await asyncio.to_thread(metric_total, process.http_port, "suspensions_http_request_duration_seconds_count",
                                        route="/api/v1/spaces/{space}/customers/{customer}/suspend", status="504")
        assert count == 1
    finally:
        process.stop()


async def test_a_bulk_job_whose_api_process_died_reads_as_interrupted(isolated: Settings, tmp_path: Path) -> None:
    """No state worker here: the job waits for its outcomes, marked alive by its process; once that
    process is killed, the job reads as failed (interrupted), never as running forever."""
    space = uid("space")
    conn = await asyncpg.connect(isolated.database_url)
    try:
        token = await access.create_token(conn, uid("op"), Role.OPERATOR, [space])
    finally:
        await conn.close()
    fast = {"SUSPENSIONS_API_BULK_HEARTBEAT_S": "0.5"}  # stale after 1.5 s
    customers = [uid("cust") for _ in range(5)]
    await seed_customers(isolated.database_url, space, customers)
    body = "customer_id,space_id\n" + "".join(f"{customer},{space}\n" for customer in customers)

    def marked_at(seen: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(seen["updated_at"])

    async def job(process: WorkerProcess, bulk_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{process.api_port}", timeout=30) as client:
            response = await client.get(f"/api/v1/spaces/{space}/bulk/{bulk_id}", headers=auth(token))
            assert response.status_code == 200, response.text
            return dict(response.json())

    first = WorkerProcess(isolated, ("api",), fast, log_path=tmp_path / "api-1.log").start()
    try:
        await wait_for_http(f"http://127.0.0.1:{first.api_port}/healthz")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{first.api_port}", timeout=30) as client:
            started = await client.post(f"/api/v1/spaces/{space}/bulk", content=body.encode(),
                                        headers=auth(token) | {"Content-Type": "text/csv"})
        assert started.status_code == 202, started.text
        bulk_id = started.json()["bulk_id"]

        async def published() -> datetime | None:
            seen = await job(first, bulk_id)
            return marked_at(seen) if seen["status"] == "running" and seen["published"] == 5 else None

        marked = await wait_until(published, 30, "every command published, the job running")

        async def marked_again() -> bool:  # read through the staleness check every 50 ms, and still running
            seen = await job(first, bulk_id)
            assert seen["status"] == "running", seen
            return marked_at(seen) > marked

        await wait_until(marked_again, 10, "the job marked alive again by its process")
        first.kill()
    finally:
        first.stop()
    second = WorkerProcess(isolated, ("api",), fast, log_path=tmp_path / "api-2.log").start()
    try:
        await wait_for_http(f"http://127.0.0.1:{second.api_port}/healthz")

        async def interrupted() -> dict[str, Any] | None:
            seen = await job(second, bulk_id)
            return seen if seen["status"] != "running" else None

        ended = await wait_until(interrupted, 10, "the dead process's job to read as interrupted")
        assert ended["status"] == "failed" and ended["error"].startswith("interrupted") and ended["published"] == 5
    finally:
        second.stop()
