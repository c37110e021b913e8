"""Issue 26: a space at a glance over the API: the summary's figures equal what the test published, per
reason and per currency; who may read them (another space answers 404); the CSV export's rows."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from models import CustomerState, Reason
from suspensions import access
from suspensions.access import Role
from suspensions.local.seed import copy_states
from tests.integration.overview_scenario import Scenario, build
from tests.operator_support import auth
from tests.support import WorkerProcess, uid, wait_for_http

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module")
async def scenario(producer: AIOKafkaProducer, db: asyncpg.Pool, workers: WorkerProcess) -> Scenario:
    return await build(producer, db)


@pytest_asyncio.fixture(scope="module")
async def api(workers: WorkerProcess) -> AsyncIterator[httpx.AsyncClient]:
    await wait_for_http(f"http://127.0.0.1:{workers.api_port}/healthz")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{workers.api_port}", timeout=30) as client:
        yield client


async def token(db: asyncpg.Pool, role: Role, *spaces: str) -> str:
    async with db.acquire() as conn:
        return await access.create_token(conn, uid(role.name.lower()), role, list(spaces))


def amounts(entries: list[dict[str, object]]) -> dict[str, tuple[int, str]]:
    return {str(e["currency"]): (int(str(e["jobs"])), str(e["amount"])) for e in entries}


async def test_the_summary_holds_the_published_figures_for_its_space_only(
        api: httpx.AsyncClient, scenario: Scenario, db: asyncpg.Pool) -> None:
    viewer = await token(db, Role.VIEWER, scenario.space)
    answer = await api.get(f"/api/v1/spaces/{scenario.space}/summary", headers=auth(viewer))
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    now = summary["now"]
    assert now["suspended"] == scenario.suspended_now
    every_reason = {reason.value: 0 for reason in Reason}  # every reason of the contract, none left out
    assert {e["reason"]: e["customers"] for e in now["by_reason"]} == every_reason | scenario.now_by_reason
    assert (now["scheduled_suspensions"], now["scheduled_lifts"], now["dead_letters"]) == (
        scenario.scheduled_suspensions, scenario.scheduled_lifts, scenario.dead_letters)
    totals = summary["totals"]
    assert (totals["suspensions"], totals["lifts"]) == (scenario.suspensions, scenario.lifts)
    assert amounts(totals["dropped"]) == scenario.dropped
    assert amounts(totals["billed"]) == scenario.billed
    assert amounts(totals["waived"]) == scenario.waived
    assert totals["lift_median_s"] is not None and totals["lift_median_s"] >= 0
    days = summary["days"]
    assert len(days) == 30 and days[-1]["day"] == summary["to_day"] and summary["time_zone"] == "UTC"
    assert sum(day["suspensions"] for day in days) == scenario.suspensions
    assert sum(day["lifts"] for day in days) == scenario.lifts
    assert days[-1]["suspended_by_reason"] == scenario.now_by_reason  # the end of today is now

    # A chosen range: from the scenario's first day (today, unless it ran over midnight) to today.
    first = next(day["day"] for day in days if day["suspensions"])
    chosen = (await api.get(f"/api/v1/spaces/{scenario.space}/summary", params={"from": first, "to": summary["to_day"]},
                            headers=auth(viewer))).json()
    assert chosen["days"][0]["day"] == first and chosen["days"][-1]["day"] == summary["to_day"]
    assert chosen["totals"] == summary["totals"]


async def test_the_summary_answers_only_the_spaces_tokens(api: httpx.AsyncClient, scenario: Scenario,
                                                          db: asyncpg.Pool) -> None:
    url = f"/api/v1/spaces/{scenario.space}/summary"
    assert (await api.get(url)).status_code == 401
    other_space = uid("space")
    elsewhere = await token(db, Role.ADMIN, other_space)
    refused = await api.get(url, headers=auth(elsewhere))
    missing = await api.get(f"/api/v1/spaces/{uid('space')}/summary", headers=auth(elsewhere))
    assert refused.status_code == missing.status_code == 404
    assert refused.json() == missing.json() == {"detail": "not found"}
    assert (await api.get(f"/api/v1/spaces/{scenario.space}/suspensions.csv",
                          headers=auth(elsewhere))).status_code == 404
    assert (await api.get(f"/api/v1/spaces/{other_space}/summary", headers=auth(elsewhere))).json()["now"] == {
        "suspended": 0, "by_reason": [{"reason": reason.value, "customers": 0} for reason in Reason],
        "scheduled_suspensions": 0, "scheduled_lifts": 0, "dead_letters": 0}
    viewer = await token(db, Role.VIEWER, scenario.space)
    for params in ({"from": "2026-12-02", "to": "2026-12-01"}, {"from": "2020-01-01", "to": "2026-12-01"}):
        assert (await api.get(url, params=params, headers=auth(viewer))).status_code == 422


async def test_the_export_has_a_row_per_suspension_with_formulas_neutralised(
        api: httpx.AsyncClient, scenario: Scenario, db: asyncpg.Pool) -> None:
    viewer = await token(db, Role.VIEWER, scenario.space)
    answer = await api.get(f"/api/v1/spaces/{scenario.space}/suspensions.csv", headers=auth(viewer))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    rows = {row["customer_id"]: row for row in csv.DictReader(io.StringIO(answer.text))}
    assert set(rows) == set(scenario.ids.values())
    maria = rows[scenario.ids["maria"]]
    assert (maria["display_name"], maria["email"], maria["reasons"]) == ("Maria Harbour", "maria@harbour.test", "plan")
    assert maria["lifted_at"] and maria["missed_invoices"] == "bill" and maria["notes"] == "paid"
    assert (maria["invoices_dropped"], maria["amount_dropped"]) == ("2", "100.00 EUR; 30.50 GBP")
    assert (maria["invoices_billed"], maria["amount_billed"], maria["invoices_waived"]) == (
        "2", "100.00 EUR; 30.50 GBP", "0")
    mario = rows[scenario.ids["mario"]]
    assert (mario["invoices_waived"], mario["amount_waived"], mario["invoices_billed"]) == ("1", "20.25 EUR", "0")
    zoe = rows[scenario.ids["zoe"]]
    assert (zoe["reasons"], zoe["lifted_at"], zoe["suspended_by"]) == ("manual signup", "", "admin:scenario")
    formula = rows[scenario.ids["formula"]]
    # What a spreadsheet would run is text: a leading apostrophe.
    assert formula["display_name"] == "'" + str(scenario.names["formula"])
    assert formula["email"] == "'+formula@evil.test" and formula["notes"] == "'-1+1"


async def test_a_suspension_whose_history_is_gone_still_counts_from_the_state(api: httpx.AsyncClient,
                                                                              db: asyncpg.Pool) -> None:
    """History kept for a while only (or rows written without it): a customer suspended now is counted on
    each day since its state's ``suspended_at``."""
    space, now = uid("space"), datetime.now(UTC)
    async with db.acquire() as conn:
        await copy_states(conn, [CustomerState(uid("old"), space, True, (Reason.PLAN,), now - timedelta(days=3), None,
                                               1, now, "seed") for _ in range(2)])
    viewer = await token(db, Role.VIEWER, space)
    first = (now - timedelta(days=5)).date().isoformat()
    summary = (await api.get(f"/api/v1/spaces/{space}/summary", params={"from": first}, headers=auth(viewer))).json()
    per_day = [day["suspended_by_reason"] for day in summary["days"]]
    assert per_day == [{}, {}] + [{"plan": 2}] * 4  # from the day of `suspended_at`, three days ago, to now
    assert [day["suspensions"] for day in summary["days"]] == [0, 0, 2, 0, 0, 0]
