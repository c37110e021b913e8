"""Issue 21 §2: the HTTP edge of the API process (body limits, throttling, headers, sessions, internal
endpoints, messages, control characters), over real HTTP against an API process of this module's own,
started with small limits, beside the session's workers (which apply its commands).

Each test that fails authentications on purpose does it from client addresses of its own (uvicorn
trusts the loopback proxy's X-Forwarded-For), so the per-address throttle never leaks between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from markupsafe import escape

from suspensions import access
from suspensions.access import Role
from suspensions.api.console import NOTICES, PROBLEMS
from suspensions.api.edge import CONTENT_SECURITY_POLICY
from tests.integration.builders import command
from tests.operator_support import post_head, raw
from tests.support import TopicTail, WorkerProcess, send, uid, wait_until
from topics import SUSPENSION_COMMANDS
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
MAX_BULK_BYTES = 4 * MIB  # room for an upload that the old console route would have spooled to disk
MAX_BULK_LINES = 50
FAILURES_PER_MINUTE = 5
EDGE_ENV = {
    "SUSPENSIONS_API_MAX_BULK_BYTES": str(MAX_BULK_BYTES),
    "SUSPENSIONS_API_MAX_BULK_LINES": str(MAX_BULK_LINES),
    "SUSPENSIONS_API_AUTH_FAILURES_PER_MINUTE": str(FAILURES_PER_MINUTE),
}
NOT_FOUND = {"detail": "not found"}


@dataclass
class Tokens:
    space: str
    operator: str
    operator_name: str
    viewer: str
    admin: str


@pytest_asyncio.fixture(scope="module")
async def edge(settings: Settings, workers: WorkerProcess,
               tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WorkerProcess]:
    """An API process of its own (the session's workers apply its commands), with small limits."""
    process = WorkerProcess(settings, ("api",), EDGE_ENV, log_path=tmp_path_factory.mktemp("edge") / "api.log")
    process.start()
    try:
        await process.wait_ready()  # its readiness, on the internal port
        yield process
    finally:
        process.stop()


@pytest_asyncio.fixture(scope="module")
async def tokens(db: asyncpg.Pool) -> Tokens:
    space = uid("space")
    names = {role: uid(role) for role in ("operator", "viewer", "admin")}
    async with db.acquire() as conn:
        operator = await access.create_token(conn, names["operator"], Role.OPERATOR, [space])
        viewer = await access.create_token(conn, names["viewer"], Role.VIEWER, [space])
        admin = await access.create_token(conn, names["admin"], Role.ADMIN, [space])
    return Tokens(space, operator, names["operator"], viewer, admin)


def address() -> str:
    """A client address of the test's own (198.18.0.0/15, set aside for tests)."""
    return str(ipaddress.IPv4Address("198.18.0.0") + secrets.randbelow(2 ** 17 - 2) + 1)


def auth(token: str, client: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} | ({"X-Forwarded-For": client} if client else {})


async def call(edge: WorkerProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a fresh client: no cookie is kept between calls unless a test sends it."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.api_port}", timeout=30) as client:
        return await client.request(method, path, **kwargs)


def customer_path(space: str, customer: str = "", tail: str = "") -> str:
    return f"/api/v1/spaces/{space}/customers" + (f"/{customer}" if customer else "") + tail


async def known_customer(edge: WorkerProcess, producer: AIOKafkaProducer, tokens: Tokens) -> str:
    """A customer the service knows in the space (suspended by an upstream command)."""
    customer = uid("cust")
    await send(producer, SUSPENSION_COMMANDS.name, customer, command(customer, tokens.space))

    async def known() -> bool:
        found = await call(edge, "GET", customer_path(tokens.space, customer), headers=auth(tokens.viewer))
        return found.status_code == 200

    await wait_until(known, 30, f"{customer} to be known")
    return customer


async def bulk_jobs(db: asyncpg.Pool, space: str) -> int:
    async with db.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM bulk_jobs WHERE space_id = $1", space))


async def sign_in(edge: WorkerProcess, token: str, **headers: str) -> httpx.Response:
    return await call(edge, "POST", "/signin", data={"token": token, "next": "/"},
                      headers={name.replace("_", "-"): value for name, value in headers.items()})


def set_cookie(response: httpx.Response) -> tuple[str, str, str]:
    """(name, value, attributes) of the one Set-Cookie of a response."""
    [header] = response.headers.get_list("set-cookie")
    pair, _, attributes = header.partition(";")
    name, _, value = pair.partition("=")
    return name, value, attributes.lower()


async def session_cookie(edge: WorkerProcess, token: str, client: str | None = None) -> str:
    signed = await sign_in(edge, token, **({"X-Forwarded-For": client} if client else {}))
    assert signed.status_code == 303, signed.text
    name, value, _ = set_cookie(signed)
    assert name == "suspensions_session"
    return value


def form_token(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no form token on the page"
    return match.group(1)


def written_by(process: WorkerProcess) -> int:
    """Bytes the process has passed to write() so far (``wchar``: files, pipes and its log; not sockets)."""
    found = re.search(r"^wchar: (\d+)$", Path(f"/proc/{process.running.pid}/io").read_text(), re.MULTILINE)
    assert found, "no wchar in /proc/<pid>/io"
    return int(found.group(1))


def log_lines(edge: WorkerProcess) -> list[dict[str, Any]]:
    assert edge.log_path is not None
    lines = []
    for line in edge.log_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return lines


# --- 1. body limits --------------------------------------------------------------------------------


async def test_a_10_mb_body_is_refused_before_it_is_read_and_before_any_token_lookup(
        edge: WorkerProcess, tokens: Tokens) -> None:
    failures = await asyncio.to_thread(edge.metric, "suspensions_auth_failures_total")
    guess = f"sus_{secrets.token_urlsafe(32)}"  # would be a failed authentication, were it looked up
    head = post_head(customer_path(tokens.space, uid("cust"), "/suspend"), 10 * MIB, "application/json",
                     Authorization=f"Bearer {guess}", X_Forwarded_For=address())
    answer = await raw(edge.api_port, head, b'{"note": "')  # 10 bytes of 10 MiB: the rest never comes
    assert answer.status == 413 and b"larger than 1048576 bytes" in answer.body
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert await asyncio.to_thread(edge.metric, "suspensions_auth_failures_total") == failures


async def test_a_streamed_body_is_cut_at_the_limit_and_nothing_is_published(
        edge: WorkerProcess, tokens: Tokens, producer: AIOKafkaProducer, tail: TopicTail) -> None:
    customer = await known_customer(edge, producer, tokens)
    path = customer_path(tokens.space, customer, "/suspend")
    # Chunked, no Content-Length: 1 MiB of a note, then the byte that crosses the limit; no end chunk.
    note = b'{"note": "' + b"x" * (MIB - 10)
    chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n"
                      for part in [note[i:i + 65536] for i in range(0, len(note), 65536)] + [b"x"])
    answer = await raw(edge.api_port, post_head(path, None, "application/json", Authorization=f"Bearer {tokens.operator}"),
                       chunks)
    assert answer.status == 413 and answer.headers["x-frame-options"] == "DENY"
    # A marker on the same partition (same key) behind it: the refused one was never published.
    marker = await call(edge, "POST", customer_path(tokens.space, customer, "/lift") + "?wait=true",
                        headers=auth(tokens.operator), json={"note": "marker"})
    assert marker.status_code == 200, marker.text
    await tail.wait_for(SUSPENSION_COMMANDS.name, customer_id=customer, action="lift")
    ours = [c for c in tail.matching(SUSPENSION_COMMANDS.name, customer_id=customer)
            if c["actor"] == f"admin:{tokens.operator_name}"]
    assert [c["action"] for c in ours] == ["lift"]


async def test_api_csv_limits_bytes_and_lines(edge: WorkerProcess, tokens: Tokens, db: asyncpg.Pool) -> None:
    bulk = f"/api/v1/spaces/{tokens.space}/bulk"
    before = await bulk_jobs(db, tokens.space)
    # Above the bytes: refused from Content-Length, before the body.
    answer = await raw(edge.api_port, post_head(bulk, MAX_BULK_BYTES + 1, "text/csv",
                                                Authorization=f"Bearer {tokens.operator}"), b"customer_id,")
    assert answer.status == 413

    def csv_of(count: int) -> str:
        return "".join(f"{uid('c')},{tokens.space}\n" for _ in range(count))

    headers = auth(tokens.operator) | {"Content-Type": "text/csv"}
    # One line too many: counted exactly after the body (within the edge's multipart slack)...
    over = await call(edge, "POST", bulk, content=csv_of(MAX_BULK_LINES + 1).encode(), headers=headers)
    assert over.status_code == 413 and f"more than {MAX_BULK_LINES} lines" in over.json()["detail"]
    # ... far too many: cut by the edge while streaming (a CR alone ends a line too).
    cr = await call(edge, "POST", bulk, content=csv_of(4 * MAX_BULK_LINES).replace("\n", "\r").encode(),
                    headers=headers)
    assert cr.status_code == 413 and f"more than {MAX_BULK_LINES} lines" in cr.json()["detail"]
    assert await bulk_jobs(db, tokens.space) == before
    # Exactly the limit (no newline after the last line) is a job.
    at_limit = await call(edge, "POST", bulk, content=csv_of(MAX_BULK_LINES).rstrip("\n").encode(), headers=headers)
    assert at_limit.status_code == 202, at_limit.text
    assert await bulk_jobs(db, tokens.space) == before + 1


async def test_console_upload_limits_sign_in_and_action(edge: WorkerProcess, tokens: Tokens,
                                                        db: asyncpg.Pool) -> None:
    space, form = tokens.space, f"/console/spaces/{tokens.space}/bulk"
    cookie = await session_cookie(edge, tokens.operator)
    jar = {"Cookie": f"suspensions_session={cookie}"}
    page = await call(edge, "GET", form, headers=jar)
    csrf = form_token(page.text)
    before = await bulk_jobs(db, space)

    def upload(lines: int, action: str = "suspend") -> dict[str, Any]:
        text = "".join(f"{uid('c')},{space}\n" for _ in range(lines))
        return {"data": {"csrf": csrf, "action": action}, "files": {"file": ("members.csv", text, "text/csv")}}

    # An anonymous upload is sent to sign in, and nothing of it is written out (the route once parsed the
    # form first, which spools a file above 1 MiB to a temporary file): the process's write() total.
    written = written_by(edge)
    anonymous = await call(edge, "POST", form, data={"csrf": "x", "action": "suspend"},
                           files={"file": ("members.csv", b"x" * (2 * MIB), "text/csv")})
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/signin")
    assert written_by(edge) - written < 256 * 1024
    # Above the bytes: refused from Content-Length, nothing of it read.
    boundary = "edge-test-boundary"
    answer = await raw(edge.api_port, post_head(form, MAX_BULK_BYTES + 1, f"multipart/form-data; boundary={boundary}",
                                                Cookie=f"suspensions_session={cookie}"),
                       f"--{boundary}\r\n".encode())
    assert answer.status == 413
    too_long = await call(edge, "POST", form, headers=jar, **upload(MAX_BULK_LINES + 1))
    assert too_long.status_code == 413 and f"more than {MAX_BULK_LINES} lines" in too_long.text
    other_action = await call(edge, "POST", form, headers=jar, **upload(3, "delete"))
    assert other_action.status_code == 422 and "suspend or lift" in other_action.text
    assert await bulk_jobs(db, space) == before
    accepted = await call(edge, "POST", form, headers=jar, **upload(MAX_BULK_LINES, "lift"))
    assert accepted.status_code == 303 and "/bulk/" in accepted.headers["location"]
    assert await bulk_jobs(db, space) == before + 1


# --- 2. throttling ----------------------------------------------------------------------------------


async def test_failed_authentications_are_throttled_per_address(edge: WorkerProcess, tokens: Tokens) -> None:
    guesser, other = address(), address()
    listing = customer_path(tokens.space)
    guesses = [f"sus_{secrets.token_urlsafe(32)}" for _ in range(FAILURES_PER_MINUTE)]
    for guess in guesses:
        assert (await call(edge, "GET", listing, headers=auth(guess, guesser))).status_code == 401
    refused = await call(edge, "GET", listing, headers=auth(tokens.operator, guesser))  # even a good token
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["cache-control"] == "no-store"
    # Another address is not affected, and its successes (API, console) do not free the first one.
    for _ in range(FAILURES_PER_MINUTE - 1):
        assert (await call(edge, "GET", listing, headers=auth("sus_wrong", other))).status_code == 401
    assert (await call(edge, "GET", listing, headers=auth(tokens.operator, other))).status_code == 200
    assert (await sign_in(edge, tokens.operator, X_Forwarded_For=other)).status_code == 303
    assert (await call(edge, "GET", listing, headers=auth(tokens.operator, guesser))).status_code == 429
    # Each failure logged once, with the address and the reason, and only the token's first 4 characters.
    logged = [line for line in log_lines(edge) if line.get("message") == "authentication failed"]
    mine = [line for line in logged if line.get("client") == guesser]
    assert len(mine) == FAILURES_PER_MINUTE
    assert all(line["reason"] and line["credential_start"] == "sus_" for line in mine)
    text = edge.log_path.read_text() if edge.log_path else ""
    assert not any(guess in text or guess[4:] in text for guess in guesses)
    assert tokens.operator not in text


async def test_guesses_sent_at_once_get_no_more_answers_than_the_limit(edge: WorkerProcess, tokens: Tokens,
                                                                      db: asyncpg.Pool) -> None:
    """Each attempt counts before its token is looked up: guesses sent together cannot all pass the check
    before the first fails. Their lookups are held back (the test locks the tokens' table), so without
    that, every guess would be looked up."""
    guesser, listing = address(), customer_path(tokens.space)
    async with db.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        try:
            await holder.execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
            guesses = [asyncio.ensure_future(call(edge, "GET", listing,
                                                  headers=auth(f"sus_{secrets.token_urlsafe(32)}", guesser)))
                       for _ in range(3 * FAILURES_PER_MINUTE)]

            async def each_answered_or_looking_up() -> bool:
                looking_up = await holder.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'api_tokens'::regclass")
                return sum(guess.done() for guess in guesses) + looking_up >= len(guesses)

            await wait_until(each_answered_or_looking_up, 30, "every guess answered or held in its lookup")
        finally:
            await transaction.rollback()
        answers = await asyncio.gather(*guesses)
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] * FAILURES_PER_MINUTE + [429] * (2 * FAILURES_PER_MINUTE), statuses
    assert all(int(answer.headers["retry-after"]) >= 1 for answer in answers if answer.status_code == 429)
    assert (await call(edge, "GET", listing, headers=auth(tokens.operator, guesser))).status_code == 429


async def test_console_sign_in_and_session_cookies_are_throttled(edge: WorkerProcess, tokens: Tokens,
                                                                 db: asyncpg.Pool) -> None:
    signer, cookie_guesser = address(), address()
    for _ in range(FAILURES_PER_MINUTE):
        assert (await sign_in(edge, f"sus_{secrets.token_urlsafe(8)}", X_Forwarded_For=signer)).status_code == 401
    async with db.acquire() as conn:
        sessions = await conn.fetchval("SELECT count(*) FROM console_sessions WHERE token_name = $1",
                                       tokens.operator_name)
    throttled = await sign_in(edge, tokens.operator, X_Forwarded_For=signer)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM console_sessions WHERE token_name = $1",
                                   tokens.operator_name) == sessions  # nothing created
    page = f"/console/spaces/{tokens.space}/customers"
    for _ in range(FAILURES_PER_MINUTE):
        stale = await call(edge, "GET", page, headers={"Cookie": f"suspensions_session={secrets.token_urlsafe(32)}",
                                                      "X-Forwarded-For": cookie_guesser})
        assert stale.status_code == 303 and "max-age=0" in set_cookie(stale)[2]  # and the browser forgets it
    blocked = await call(edge, "GET", page, headers={"Cookie": "suspensions_session=x",
                                                    "X-Forwarded-For": cookie_guesser})
    assert blocked.status_code == 429


# --- 3. security headers ------------------------------------------------------------------------------


async def test_every_answer_carries_the_security_headers(edge: WorkerProcess, tokens: Tokens,
                                                         producer: AIOKafkaProducer) -> None:
    customer = await known_customer(edge, producer, tokens)
    cookie = await session_cookie(edge, tokens.viewer)
    answers = {
        "api": await call(edge, "GET", customer_path(tokens.space, customer), headers=auth(tokens.viewer)),
        "api 401": await call(edge, "GET", customer_path(tokens.space)),
        "api 422": await call(edge, "GET", customer_path(tokens.space) + "?limit=0", headers=auth(tokens.viewer)),
        "no route": await call(edge, "GET", "/nothing/here"),
        "sign-in page": await call(edge, "GET", "/signin"),
        "console page": await call(edge, "GET", f"/console/spaces/{tokens.space}/customers/{customer}",
                                   headers={"Cookie": f"suspensions_session={cookie}"}),
        "static": await call(edge, "GET", "/static/console.js"),
        "healthz": await call(edge, "GET", "/healthz"),
    }
    assert [answer.status_code for answer in answers.values()] == [200, 401, 422, 404, 200, 200, 200, 200]
    for what, answer in answers.items():
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, what
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY", what
        assert answer.headers["x-content-type-options"] == "nosniff", what
        assert answer.headers["referrer-policy"] == "no-referrer", what
        assert (answer.headers.get("cache-control") == "no-store") is (what != "static"), what
        assert "strict-transport-security" not in answer.headers, what  # plain HTTP
    # The pages hold no inline script: every script is a file, no element has an event handler.
    html = answers["console page"].text
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/console.js" defer>']
    assert not re.search(r"\son[a-z]+=", html)
    over_https = await call(edge, "GET", "/signin", headers={"X-Forwarded-Proto": "https"})
    assert over_https.headers["strict-transport-security"].startswith("max-age=")


# --- 4. sessions ------------------------------------------------------------------------------------------


async def test_the_session_cookie_is_secure_and_host_bound_unless_on_plain_loopback(
        edge: WorkerProcess, tokens: Tokens) -> None:
    plain = await sign_in(edge, tokens.viewer)
    name, _, attributes = set_cookie(plain)
    assert name == "suspensions_session" and "secure" not in attributes
    assert {"httponly", "path=/", "samesite=strict"} <= {part.strip() for part in attributes.split(";")}

    https = {"X-Forwarded-Proto": "https"}
    secured = await sign_in(edge, tokens.viewer, **https)
    name, value, attributes = set_cookie(secured)
    parts = {part.strip() for part in attributes.split(";")}
    assert name == "__Host-suspensions_session" and {"secure", "httponly", "path=/", "samesite=strict"} <= parts
    assert not any(part.startswith("domain") for part in parts)
    home = await call(edge, "GET", "/", headers=https | {"Cookie": f"__Host-suspensions_session={value}"})
    assert home.status_code == 303 and home.headers["location"].startswith("/console/spaces/")
    # The plain name is not read over HTTPS.
    assert (await call(edge, "GET", "/", headers=https | {"Cookie": f"suspensions_session={value}"})
            ).headers["location"].startswith("/signin")


async def test_an_idle_session_ends_and_expired_ones_are_purged_at_sign_in(edge: WorkerProcess, tokens: Tokens,
                                                                           db: asyncpg.Pool) -> None:
    idle, used = await session_cookie(edge, tokens.viewer), await session_cookie(edge, tokens.viewer)
    async with db.acquire() as conn:  # 31 minutes unused (the default idle limit is 30)
        await conn.execute("UPDATE console_sessions SET last_seen_at = $2 WHERE session_hash = $1",
                           access.digest(idle), datetime.now(UTC) - timedelta(minutes=31))
    client = address()  # its failed session check counts against this address only
    ended = await call(edge, "GET", "/", headers={"Cookie": f"suspensions_session={idle}", "X-Forwarded-For": client})
    assert ended.status_code == 303 and ended.headers["location"].startswith("/signin")
    live = await call(edge, "GET", "/", headers={"Cookie": f"suspensions_session={used}"})
    assert live.status_code == 303 and live.headers["location"].startswith("/console/")
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM console_sessions WHERE session_hash = $1",
                                   access.digest(idle)) == 1
    await session_cookie(edge, tokens.viewer)
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM console_sessions WHERE session_hash = $1",
                                   access.digest(idle)) == 0
        assert await conn.fetchval("SELECT count(*) FROM console_sessions WHERE session_hash = $1",
                                   access.digest(used)) == 1


async def test_a_cross_site_sign_in_is_refused_and_creates_nothing(edge: WorkerProcess, tokens: Tokens,
                                                                   db: asyncpg.Pool) -> None:
    async def sessions() -> int:
        async with db.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM console_sessions WHERE token_name = $1",
                                           tokens.operator_name))

    before = await sessions()
    for headers in ({"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Sec-Fetch-Site": "same-site", "Origin": f"http://127.0.0.1:{edge.api_port}"},
                    {"Origin": f"http://127.0.0.1:{edge.api_port + 1}"}):
        refused = await sign_in(edge, tokens.operator, **headers)
        assert refused.status_code == 403 and "set-cookie" not in refused.headers, headers
    assert await sessions() == before
    same = await sign_in(edge, tokens.operator, Origin=f"http://127.0.0.1:{edge.api_port}",
                         Sec_Fetch_Site="same-origin")
    assert same.status_code == 303 and await sessions() == before + 1


# --- 5. /metrics and /readyz ------------------------------------------------------------------------------


async def test_metrics_and_readiness_live_on_the_internal_port(edge: WorkerProcess, tokens: Tokens) -> None:
    assert (await call(edge, "GET", customer_path(tokens.space), headers=auth(tokens.viewer))).status_code == 200
    for path in ("/metrics", "/readyz"):
        assert (await call(edge, "GET", path)).status_code == 404
        assert (await call(edge, "GET", path, headers=auth(tokens.operator))).status_code == 404
        assert (await call(edge, "GET", path, headers=auth("sus_" + secrets.token_urlsafe(8), address()))
                ).status_code == 404
        assert (await call(edge, "GET", path, headers=auth(tokens.admin))).status_code == 200
    assert (await call(edge, "GET", "/healthz")).status_code == 200
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{edge.http_port}", timeout=10) as internal:
        metrics = await internal.get("/metrics")
        assert metrics.status_code == 200 and 'route="/api/v1/spaces/{space}/customers"' in metrics.text
        ready = await internal.get("/readyz")
        assert ready.status_code == 200 and ready.json()["workers"]["api"]["ready"] is True


# --- 6. messages come from codes ----------------------------------------------------------------------------


async def test_the_customer_page_shows_only_its_own_messages(edge: WorkerProcess, tokens: Tokens,
                                                              producer: AIOKafkaProducer) -> None:
    customer = await known_customer(edge, producer, tokens)
    jar = {"Cookie": f"suspensions_session={await session_cookie(edge, tokens.operator)}"}
    url = f"/console/spaces/{tokens.space}/customers/{customer}"
    forged = await call(edge, "GET", url, params={"error": "Your account is closed: call +1 555 0100",
                                                  "done": "Applied: pay now"}, headers=jar)
    assert forged.status_code == 200
    assert "555 0100" not in forged.text and "pay now" not in forged.text and 'class="alert' not in forged.text
    known = await call(edge, "GET", url, params={"done": "suspend:changed", "error": "when"}, headers=jar)
    assert escape(NOTICES["suspend:changed"]) in known.text and escape(PROBLEMS["when"]) in known.text
    # The console's own redirects carry codes, never text.
    csrf = form_token(known.text)
    past = await call(edge, "POST", url + "/lift", headers=jar,
                      data={"csrf": csrf, "confirm": "yes", "missed_invoices": "bill", "at": "2020-01-01"})
    assert past.status_code == 303 and past.headers["location"] == url + "?error=when"


# --- 7 (with 1). the console's bulk action is covered above; 8. control characters in URLs ---------------


async def test_control_characters_in_urls_are_unknown_ids_or_invalid_values(
        edge: WorkerProcess, tokens: Tokens, tail: TopicTail, producer: AIOKafkaProducer) -> None:
    space, viewer = tokens.space, auth(tokens.viewer)
    unknown = await call(edge, "GET", customer_path(space, uid("nobody")), headers=viewer)
    assert (unknown.status_code, unknown.json()) == (404, NOT_FOUND)
    for bad in ("a%00b", "a%01b", "a%1fb", "%0a"):
        for path in (customer_path(space, bad), customer_path(space, bad, "/history"),
                     f"/api/v1/spaces/{space}/bulk/{bad}", customer_path(f"s{bad}")):
            found = await call(edge, "GET", path, headers=viewer)
            assert (found.status_code, found.json()) == (404, NOT_FOUND), path
        acted = await call(edge, "POST", customer_path(space, bad, "/suspend"), headers=auth(tokens.operator),
                           json={})
        assert (acted.status_code, acted.json()) == (404, NOT_FOUND), acted.text
        for query in (f"search={bad}", f"cursor={bad}"):
            invalid = await call(edge, "GET", customer_path(space) + f"?{query}", headers=viewer)
            assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"][0] == "query", query
    # A command the space may have, sent after them: once the tail has read it, it would have read theirs.
    allowed = await call(edge, "POST", customer_path(space, await known_customer(edge, producer, tokens), "/suspend"),
                         headers=auth(tokens.operator), json={})
    assert allowed.status_code == 202, allowed.text
    await tail.wait_for(SUSPENSION_COMMANDS.name, command_id=allowed.json()["command_id"])
    assert not [c for c in tail.matching(SUSPENSION_COMMANDS.name, space_id=space)
                if re.search(r"[\x00-\x1f]", c["customer_id"])]

    jar = {"Cookie": f"suspensions_session={await session_cookie(edge, tokens.viewer)}"}
    nobody = await call(edge, "GET", f"/console/spaces/{space}/customers/{uid('nobody')}", headers=jar)
    assert nobody.status_code == 404
    for page in (f"/console/spaces/{space}/customers/a%00b", f"/console/spaces/{space}/bulk/a%01b",
                 "/console/spaces/s%00/customers"):
        found = await call(edge, "GET", page, headers=jar)
        assert (found.status_code, found.text) == (404, nobody.text), page
    search = await call(edge, "GET", f"/console/spaces/{space}/customers?q=a%00b", headers=jar)
    assert search.status_code == 422
    assert (await call(edge, "GET", "/static/a%00b")).status_code == 404
    assert edge.running.poll() is None  # and nothing of it brought the process down
