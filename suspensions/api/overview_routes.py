"""The console's pages of a space at a glance (issue 26): the overview, the suspensions behind its figures
(and their CSV), the space's recent dead letters. Registered by ``console.register_console`` with its page
session and page renderer; the same service functions as the API's ``routes/summary.py``."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response

from suspensions import overview
from suspensions.api import overview_page
from suspensions.api.console import Signed, page
from suspensions.api.exports import suspensions_csv
from suspensions.api.routes.summary import csv_response
from suspensions.api.service import Operations

Mode = Annotated[str, Query(pattern="^(started|lifted|in_force)$")]
ReasonFilter = Annotated[str, Query(max_length=200)]


def register_overview(app: FastAPI) -> None:
    async def day_range(ops: Operations, space: str, first: date | None, last: date | None) -> overview.DayRange:
        try:
            return await ops.day_range(space, first, last)
        except overview.BadRange:
            return await ops.day_range(space, None, None)  # a hand-made URL's wrong range: the default one

    @app.get("/console/spaces/{space}", include_in_schema=False)
    async def space_overview(request: Request, space: str, signed: Signed, days: int = overview.DEFAULT_RANGE,
                             ) -> HTMLResponse:
        ops: Operations = request.app.state.operations
        Operations.visible(signed.principal, space)
        chosen = days if days in overview.RANGES else overview.DEFAULT_RANGE
        tz = await ops.zone(space)
        found = await ops.figures(signed.principal, space, overview.DayRange.ending_today(chosen, tz))
        return page(request, "overview.html", signed=signed, space=space, tz=tz,
                    **overview_page.context(found, space, chosen))

    @app.get("/console/spaces/{space}/suspensions", include_in_schema=False)
    async def suspensions(request: Request, space: str, signed: Signed,
                          first: Annotated[date | None, Query(alias="from")] = None, last: Annotated[
                              date | None, Query(alias="to")] = None, mode: Mode = "started",
                          reason: ReasonFilter = "") -> HTMLResponse:
        ops: Operations = request.app.state.operations
        Operations.visible(signed.principal, space)
        chosen = await day_range(ops, space, first, last)
        rows = await ops.suspensions(signed.principal, space, chosen, mode, reason or None)
        query = {"from": chosen.first.isoformat(), "to": chosen.last.isoformat(), "mode": mode} | (
            {"reason": reason} if reason else {})
        return page(request, "suspensions.html", signed=signed, space=space, tz=chosen.tz, rows=rows, mode=mode,
                    reason=reason, first=chosen.first, last=chosen.last, query=query,
                    reason_label=overview_page.reason_label)

    @app.get("/console/spaces/{space}/suspensions.csv", include_in_schema=False)
    async def suspensions_export(request: Request, space: str, signed: Signed,
                                 first: Annotated[date | None, Query(alias="from")] = None, last: Annotated[
                                     date | None, Query(alias="to")] = None, mode: Mode = "started",
                                 reason: ReasonFilter = "") -> Response:
        ops: Operations = request.app.state.operations
        Operations.visible(signed.principal, space)
        chosen = await day_range(ops, space, first, last)
        rows = await ops.suspensions(signed.principal, space, chosen, mode, reason or None)
        return csv_response(suspensions_csv(rows), space, chosen)

    @app.get("/console/spaces/{space}/dead-letters", include_in_schema=False)
    async def dead_letters(request: Request, space: str, signed: Signed) -> HTMLResponse:
        ops: Operations = request.app.state.operations
        return page(request, "dead_letters.html", signed=signed, space=space, tz=await ops.zone(space),
                    letters=await ops.dead_letters(signed.principal, space))
