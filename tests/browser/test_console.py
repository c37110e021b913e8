"""Issue 13: the console as a person uses it, in a real browser (Debian's headless Chromium)."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, expect

from suspensions import access
from suspensions.access import Role
from tests.browser.support import named_token, shot, signed_in, token
from tests.operator_support import history_actors, marker_applied, register_customers
from tests.support import TopicTail, uid, wait_until
from topics import SUSPENSION_COMMANDS

pytestmark = pytest.mark.integration

async def suspend_by_api(console: str, secret: str, space: str, customer: str, note: str | None = None) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{console}/api/v1/spaces/{space}/customers/{customer}/suspend?wait=true",
                                     headers={"Authorization": f"Bearer {secret}"}, json={"note": note})
        assert response.status_code == 200, response.text


async def test_find_suspend_with_a_note_and_lift_with_waive(browser: Browser, console: str, db: asyncpg.Pool,
                                                            producer: AIOKafkaProducer) -> None:
    space = uid("space")
    operator = await token(db, Role.OPERATOR, space)
    customer, other = uid("member"), uid("member")
    await register_customers(producer, db, space, [customer, other])
    await suspend_by_api(console, operator, space, other)
    await suspend_by_api(console, operator, space, customer, "first suspension")
    async with httpx.AsyncClient() as client:  # known and active before the operator acts in the console
        lifted = await client.post(f"{console}/api/v1/spaces/{space}/customers/{customer}/lift?wait=true",
                                   headers={"Authorization": f"Bearer {operator}"}, json={})
        assert lifted.status_code == 200
    page = await signed_in(browser, console, operator)
    await page.get_by_label("Search customers").fill(customer)
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_role("link", name=customer)).to_be_visible()
    await expect(page.get_by_role("link", name=other)).to_have_count(0)
    await page.get_by_role("link", name=customer).click()

    await page.get_by_label("Note (why)").fill("deposit unpaid since March")
    await page.get_by_label(re.compile("I confirm")).check()
    await page.get_by_role("button", name=f"Suspend {customer}").click()
    await expect(page.get_by_role("status")).to_contain_text("suspend → changed")
    await expect(page.get_by_text("Suspended", exact=True).first).to_be_visible()
    history = page.locator(".timeline .event").first
    await expect(history).to_contain_text("deposit unpaid since March")
    await expect(history).to_contain_text("by admin:operator-")
    await shot(page, "customer")

    await page.get_by_label("Waive them").check()
    await page.get_by_label(re.compile("I confirm")).check()
    await page.get_by_role("button", name=f"Lift {customer}").click()
    await expect(page.get_by_role("status")).to_contain_text("lift → changed")
    latest = page.locator(".timeline .event").first
    await expect(latest).to_contain_text("waive")
    await expect(page.locator(".badge.active.big")).to_be_visible()

    await page.goto(f"{console}/console/spaces/{space}/customers?suspended=1")
    await expect(page.get_by_role("link", name=other)).to_be_visible()
    await expect(page.get_by_role("link", name=customer)).to_have_count(0)
    await shot(page, "customers")
    await page.close()


async def test_bulk_upload_of_a_thousand_lines_with_a_malformed_one(browser: Browser, console: str,
                                                                    db: asyncpg.Pool, tmp_path: Path,
                                                                    producer: AIOKafkaProducer) -> None:
    space = uid("space")
    operator = await token(db, Role.OPERATOR, space)
    members = [uid("bulk") for _ in range(1_000)]
    await register_customers(producer, db, space, members)
    lines = [f"{member},{space},from the console\n" for member in members]
    lines.insert(500, "this line has one column\n")
    csv_file = tmp_path / "members.csv"
    csv_file.write_text("customer_id,space_id,note\n" + "".join(lines))
    page = await signed_in(browser, console, operator)
    await page.get_by_role("link", name="Bulk actions").click()
    await shot(page, "bulk-form")
    await page.set_input_files("#file", str(csv_file))
    await page.get_by_role("button", name="Upload and run").click()
    await expect(page.locator("#bulk-status")).to_have_text("done", timeout=90_000)
    await expect(page.locator(".summary")).to_contain_text("changed: 1000")
    await expect(page.locator(".summary")).to_contain_text("malformed: 1")
    bad = page.locator("#bulk-problems tr.bad")
    await expect(bad).to_have_count(1)
    await expect(page.locator("#bulk-report tr")).to_have_count(1 + 1_001)  # header and every line
    await expect(bad).to_contain_text("502")  # the header is line 1
    await expect(bad).to_contain_text("expected 2 or 3 columns")
    await shot(page, "bulk-report")
    await page.close()


async def test_a_viewer_sees_no_actions_and_the_api_refuses_its_post(browser: Browser, console: str,
                                                                     db: asyncpg.Pool, producer: AIOKafkaProducer,
                                                                     tail: TopicTail) -> None:
    space = uid("space")
    operator = await token(db, Role.OPERATOR, space)
    viewer_name, viewer = await named_token(db, Role.VIEWER, space)
    customer = uid("member")
    await register_customers(producer, db, space, [customer])
    await suspend_by_api(console, operator, space, customer)
    page = await signed_in(browser, console, viewer)
    await page.goto(f"{console}/console/spaces/{space}/customers/{customer}")
    await expect(page.get_by_role("heading", name=re.compile(customer))).to_be_visible()
    await expect(page.get_by_role("button", name=re.compile("Suspend|Lift"))).to_have_count(0)
    await expect(page.get_by_role("link", name="Bulk actions")).to_have_count(0)
    async with httpx.AsyncClient() as client:
        refused = await client.post(f"{console}/api/v1/spaces/{space}/customers/{customer}/lift",
                                    headers={"Authorization": f"Bearer {viewer}"}, json={})
    assert refused.status_code == 403
    # A marker behind it on the customer's partition: once applied, a lift of the viewer's would have been.
    marker = await marker_applied(producer, db, customer, space)
    await tail.wait_for(SUSPENSION_COMMANDS.name, command_id=marker)  # read by the tail too
    assert not [c for c in tail.matching(SUSPENSION_COMMANDS.name, customer_id=customer)
                if c["actor"] == f"admin:{viewer_name}"]
    assert f"admin:{viewer_name}" not in {actor for _, actor in await history_actors(db, customer)}
    await page.close()


async def test_a_form_posted_without_the_sessions_form_token_changes_nothing(
        browser: Browser, console: str, db: asyncpg.Pool, producer: AIOKafkaProducer, tail: TopicTail) -> None:
    """An operator's valid session, as a cross-site post would carry it, without the page's form token:
    refused, and nothing applied (checked after a marker). The same post with the token does apply."""
    space = uid("space")
    operator = await token(db, Role.OPERATOR, space)
    customer = uid("member")
    await register_customers(producer, db, space, [customer])
    await suspend_by_api(console, operator, space, customer)
    page = await signed_in(browser, console, operator)
    target = f"{console}/console/spaces/{space}/customers/{customer}"
    await page.goto(target)
    await expect(page.get_by_role("button", name=f"Lift {customer}")).to_be_visible()  # the session may lift
    action = f"{target}/lift"
    forged = await page.request.post(action, form={"csrf": "forged", "confirm": "yes", "missed_invoices": "bill"},
                                     max_redirects=0)
    assert forged.status == 403
    missing = await page.request.post(action, form={"confirm": "yes", "missed_invoices": "bill"}, max_redirects=0)
    assert missing.status in (403, 422)  # no form token at all: refused before any action
    marker = await marker_applied(producer, db, customer, space)
    await tail.wait_for(SUSPENSION_COMMANDS.name, command_id=marker)  # read by the tail too
    state = await db.fetchrow("SELECT suspended, version FROM customer_state WHERE customer_id = $1", customer)
    assert (state["suspended"], state["version"]) == (True, 2)  # registered, suspended; nothing since
    assert [action for action, _ in await history_actors(db, customer)] == ["register", "suspend", "register"]
    assert not tail.matching(SUSPENSION_COMMANDS.name, customer_id=customer, action="lift")
    # The control: the same post with the page's own form token lifts.
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    genuine = await page.request.post(action, form={"csrf": csrf or "", "confirm": "yes", "missed_invoices": "bill"},
                                      max_redirects=0)
    assert genuine.status == 303

    async def lifted() -> bool:
        return await db.fetchval("SELECT NOT suspended FROM customer_state WHERE customer_id = $1", customer) is True

    await wait_until(lifted, 30, "the genuine form's lift to be applied")
    await page.close()


async def test_a_revoked_tokens_console_session_stops_working(browser: Browser, console: str, db: asyncpg.Pool,
                                                             producer: AIOKafkaProducer, tail: TopicTail) -> None:
    space = uid("space")
    name, operator = await named_token(db, Role.OPERATOR, space)
    customer = uid("member")
    await register_customers(producer, db, space, [customer])
    await suspend_by_api(console, operator, space, customer)
    page = await signed_in(browser, console, operator)
    target = f"{console}/console/spaces/{space}/customers/{customer}"
    await page.goto(target)
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    async with db.acquire() as conn:
        assert await access.revoke_token(conn, name)
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # sent back to sign in
    # A form posted with the old session and its form token is refused and changes nothing.
    late = await page.request.post(f"{target}/lift", form={"csrf": csrf or "", "confirm": "yes",
                                                            "missed_invoices": "bill"}, max_redirects=0)
    assert late.status == 303 and late.headers["location"].startswith("/signin")
    marker = await marker_applied(producer, db, customer, space)
    await tail.wait_for(SUSPENSION_COMMANDS.name, command_id=marker)  # read by the tail too
    assert not tail.matching(SUSPENSION_COMMANDS.name, customer_id=customer, action="lift")
    assert await db.fetchval("SELECT suspended FROM customer_state WHERE customer_id = $1", customer) is True
    await page.close()


async def test_another_space_by_url_is_not_found(browser: Browser, console: str, db: asyncpg.Pool,
                                                 producer: AIOKafkaProducer) -> None:
    mine, theirs = uid("space"), uid("space")
    customer = uid("member")
    await register_customers(producer, db, theirs, [customer])
    await suspend_by_api(console, await token(db, Role.OPERATOR, theirs), theirs, customer)
    page = await signed_in(browser, console, await token(db, Role.ADMIN, mine))
    for url in (f"/console/spaces/{theirs}/customers/{customer}", f"/console/spaces/{theirs}/customers",
                f"/console/spaces/{mine}/customers/{customer}"):
        response = await page.goto(console + url)
        assert response is not None and response.status == 404
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    await expect(page.get_by_text(customer)).to_have_count(0)
    await page.close()


async def test_a_note_with_a_script_shows_as_text(browser: Browser, console: str, db: asyncpg.Pool,
                                                  producer: AIOKafkaProducer) -> None:
    space = uid("space")
    operator = await token(db, Role.OPERATOR, space)
    customer, note = uid("member"), "<script>window.__pwned = 1</script><b>bold?</b>"
    await register_customers(producer, db, space, [customer])
    await suspend_by_api(console, operator, space, customer, note)
    page = await signed_in(browser, console, operator)
    await page.goto(f"{console}/console/spaces/{space}/customers/{customer}")
    await expect(page.locator(".timeline .note").first).to_have_text(note)
    assert await page.evaluate("window.__pwned") is None
    assert await page.locator(".timeline .note b").count() == 0
    await page.goto(f"{console}/console/lag")
    await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()  # an operator is not an admin
    await page.close()


async def test_admin_pages(browser: Browser, console: str, db: asyncpg.Pool) -> None:
    space = uid("space")
    admin = await token(db, Role.ADMIN, space)
    page = await signed_in(browser, console, admin)
    await page.get_by_role("link", name="Lag").click()
    await expect(page.get_by_role("heading", name="Consumer lag")).to_be_visible()
    await expect(page.get_by_text("suspensions-state").first).to_be_visible()
    await shot(page, "lag")
    await page.goto(f"{console}/console/spaces/{space}/invoices")
    await expect(page.get_by_role("heading", name=re.compile("Invoices not billed"))).to_be_visible()
    await shot(page, "invoices")
    await page.close()
