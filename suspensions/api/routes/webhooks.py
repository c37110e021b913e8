"""Webhook endpoints of a space, for its admins: the API (``router``) and the console's pages
(``console_router``), over the same store as the CLI (``workers/webhooks/store.py``).

Another space's endpoint answers 404 exactly as one that does not exist; a viewer or an operator of the
space gets 403. The signing secret is shown once, in the answer that creates or rotates it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import asyncpg
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from models.moments import MomentError, parse_when
from suspensions.access import Principal, Role
from suspensions.api.console import Session, Signed, _checked_form, page
from suspensions.api.deps import ERRORS, Ops, Who
from suspensions.api.schemas import (
    ReplayRequest,
    WebhookCreated,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookRemoved,
    WebhookReplayed,
    WebhookRequest,
    WebhookSecret,
    WebhookTestSent,
)
from suspensions.api.service import NotFound, Operations
from workers.webhooks import store
from workers.webhooks.store import EndpointError

router = APIRouter(prefix="/api/v1/spaces/{space}/webhooks", tags=["webhooks"])
console_router = APIRouter(prefix="/console/spaces/{space}/webhooks", include_in_schema=False)
INVALID: dict[int | str, dict[str, Any]] = {422: {"description": "A URL, event type or moment that cannot be used"}}


def _admin(who: Principal, space: str) -> None:
    Operations.visible(who, space)  # another space: 404, before the role says anything
    Operations.allowed(who, Role.ADMIN)


async def _endpoint(conn: asyncpg.Connection, space: str, endpoint_id: str) -> asyncpg.Record:
    row = await store.endpoint(conn, endpoint_id, space)
    if row is None:
        raise NotFound()
    return row


def _invalid(field: str, message: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", field], "msg": message, "type": "value_error"}])


# --- what the API and the console do -------------------------------------------------------------------


async def add(ops: Operations, who: Principal, space: str, request: WebhookRequest) -> WebhookCreated:
    _admin(who, space)
    async with ops.pool.acquire() as conn:
        row, secret = await store.add_endpoint(conn, space, request.url, request.events, request.description,
                                               ops.settings.webhooks_allow_private, datetime.now(UTC))
    return WebhookCreated(id=row["endpoint_id"], secret=secret, url=row["url"], space_id=row["space_id"],
                          events=list(row["event_types"]))


async def endpoints(ops: Operations, who: Principal, space: str) -> list[WebhookEndpoint]:
    _admin(who, space)
    async with ops.pool.acquire() as conn:
        rows = await store.endpoints(conn, space)
    return [WebhookEndpoint.model_validate(store.endpoint_fields(row)) for row in rows]


async def endpoint(ops: Operations, who: Principal, space: str, endpoint_id: str,
                   limit: int = 50) -> tuple[WebhookEndpoint, list[WebhookDelivery]]:
    _admin(who, space)
    async with ops.pool.acquire() as conn:
        row = await _endpoint(conn, space, endpoint_id)
        rows = await store.deliveries(conn, endpoint_id, limit)
    return (WebhookEndpoint.model_validate(store.endpoint_fields(row)),
            [WebhookDelivery.model_validate(store.delivery_fields(item)) for item in rows])


async def replay(ops: Operations, who: Principal, space: str, endpoint_id: str, since: str) -> WebhookReplayed:
    _admin(who, space)
    moment = parse_when(since, await ops.zone(space))
    async with ops.pool.acquire() as conn:
        await _endpoint(conn, space, endpoint_id)
        count = await store.replay(conn, endpoint_id, moment, datetime.now(UTC))
    return WebhookReplayed(id=endpoint_id, replayed=count)


async def send_test(ops: Operations, who: Principal, space: str, endpoint_id: str) -> WebhookTestSent:
    _admin(who, space)
    async with ops.pool.acquire() as conn:
        row = await _endpoint(conn, space, endpoint_id)
        event_id = await store.send_test_event(conn, row, datetime.now(UTC))
    return WebhookTestSent(id=endpoint_id, event_id=event_id)


async def rotate(ops: Operations, who: Principal, space: str, endpoint_id: str) -> WebhookSecret:
    _admin(who, space)
    async with ops.pool.acquire() as conn:
        secret = await store.rotate_secret(conn, endpoint_id, ops.settings.webhooks_secret_overlap,
                                           datetime.now(UTC), space)
    if secret is None:
        raise NotFound()
    return WebhookSecret(id=endpoint_id, secret=secret)


async def remove(ops: Operations, who: Principal, space: str, endpoint_id: str) -> WebhookRemoved:
    _admin(who, space)
    async with ops.pool.acquire() as conn:
        if not await store.remove_endpoint(conn, endpoint_id, space):
            raise NotFound()
    return WebhookRemoved(id=endpoint_id, removed=True)


async def enable(ops: Operations, who: Principal, space: str, endpoint_id: str) -> WebhookEndpoint:
    _admin(who, space)
    async with ops.pool.acquire() as conn:
        if not await store.enable_endpoint(conn, endpoint_id, space):
            raise NotFound()
        row = await _endpoint(conn, space, endpoint_id)
    return WebhookEndpoint.model_validate(store.endpoint_fields(row))


# --- the API ---------------------------------------------------------------------------------------------


@router.get("", response_model=list[WebhookEndpoint], responses=ERRORS)
async def list_endpoints(space: str, who: Who, ops: Ops) -> list[WebhookEndpoint]:
    """The space's endpoints with their health (never their secrets)."""
    return await endpoints(ops, who, space)


@router.post("", status_code=201, response_model=WebhookCreated, responses=ERRORS | INVALID)
async def create(space: str, body: WebhookRequest, who: Who, ops: Ops) -> WebhookCreated:
    """Register an endpoint; the answer holds its signing secret, shown this once."""
    try:
        return await add(ops, who, space, body)
    except EndpointError as error:
        raise _invalid(error.field, str(error)) from None


@router.get("/{endpoint_id}", response_model=WebhookEndpoint, responses=ERRORS)
async def show(space: str, endpoint_id: str, who: Who, ops: Ops) -> WebhookEndpoint:
    return (await endpoint(ops, who, space, endpoint_id, limit=0))[0]


@router.delete("/{endpoint_id}", response_model=WebhookRemoved, responses=ERRORS)
async def delete(space: str, endpoint_id: str, who: Who, ops: Ops) -> WebhookRemoved:
    """Remove the endpoint, its deliveries and their log: nothing more is sent to it."""
    return await remove(ops, who, space, endpoint_id)


@router.post("/{endpoint_id}/rotate-secret", response_model=WebhookSecret, responses=ERRORS)
async def rotate_secret(space: str, endpoint_id: str, who: Who, ops: Ops) -> WebhookSecret:
    """A new signing secret, shown this once; the old one signs beside it for 24 hours."""
    return await rotate(ops, who, space, endpoint_id)


@router.post("/{endpoint_id}/enable", response_model=WebhookEndpoint, responses=ERRORS)
async def enable_endpoint(space: str, endpoint_id: str, who: Who, ops: Ops) -> WebhookEndpoint:
    """Enable an endpoint disabled after 410 Gone or days of failures; its pending deliveries go out."""
    return await enable(ops, who, space, endpoint_id)


@router.get("/{endpoint_id}/deliveries", response_model=list[WebhookDelivery], responses=ERRORS)
async def deliveries(space: str, endpoint_id: str, who: Who, ops: Ops, limit: int = 50) -> list[WebhookDelivery]:
    """The latest deliveries, newest first, with their last attempt (status code, latency, error)."""
    return (await endpoint(ops, who, space, endpoint_id, limit=max(1, min(limit, 1000))))[1]


@router.post("/{endpoint_id}/replay", status_code=202, response_model=WebhookReplayed, responses=ERRORS | INVALID)
async def replay_since(space: str, endpoint_id: str, body: ReplayRequest, who: Who, ops: Ops) -> WebhookReplayed:
    """Send again every event of the endpoint since a moment, in order, with their original webhook-id."""
    try:
        return await replay(ops, who, space, endpoint_id, body.since)
    except MomentError as error:
        raise _invalid("since", str(error)) from None


@router.post("/{endpoint_id}/test", status_code=202, response_model=WebhookTestSent, responses=ERRORS)
async def test_event(space: str, endpoint_id: str, who: Who, ops: Ops) -> WebhookTestSent:
    """Send a `webhook.test` event to the endpoint (no customer's data)."""
    return await send_test(ops, who, space, endpoint_id)


# --- the console -----------------------------------------------------------------------------------------

NOTICES = {"test": "Test event queued: it appears below once sent.", "removed": "Endpoint removed.",
           "enabled": "Endpoint enabled: its pending deliveries go out again."}


def _ops(request: Request) -> Operations:
    ops: Operations = request.app.state.operations
    return ops


def _where(space: str, endpoint_id: str | None = None) -> str:
    base = f"/console/spaces/{quote(space)}/webhooks"
    return base if endpoint_id is None else f"{base}/{quote(endpoint_id)}"


async def _list_page(request: Request, space: str, signed: Session, status: int = 200, **context: Any) -> HTMLResponse:
    rows = await endpoints(_ops(request), signed.principal, space)
    return page(request, "webhooks.html", status=status, signed=signed, space=space, endpoints=rows,
                tz=await _ops(request).zone(space), **context)


@console_router.get("")
async def console_list(request: Request, space: str, signed: Signed, done: str = "") -> HTMLResponse:
    return await _list_page(request, space, signed, notice=NOTICES.get(done))


@console_router.post("")
async def console_add(request: Request, space: str, signed: Signed, csrf: Annotated[str, Form()],
                      url: Annotated[str, Form()], events: Annotated[list[str] | None, Form()] = None,
                      description: Annotated[str, Form()] = "") -> Response:
    _checked_form(signed, csrf)
    try:
        created = await add(_ops(request), signed.principal, space,
                            WebhookRequest(url=url.strip(), events=events or [], description=description.strip() or None))
    except (EndpointError, ValueError) as error:
        return await _list_page(request, space, signed, status=422, problem=f"Not added: {error}")
    return await _list_page(request, space, signed, status=201, created=created)


@console_router.get("/{endpoint_id}")
async def console_endpoint(request: Request, space: str, endpoint_id: str, signed: Signed,
                           done: str = "") -> HTMLResponse:
    shown, rows = await endpoint(_ops(request), signed.principal, space, endpoint_id, limit=100)
    return page(request, "webhook.html", signed=signed, space=space, endpoint=shown, deliveries=rows,
                tz=await _ops(request).zone(space), notice=NOTICES.get(done) or _replayed(done))


def _replayed(done: str) -> str | None:
    count = done.removeprefix("replayed:")
    return f"Replay queued: {count} event(s) to be sent again." if done.startswith("replayed:") and count.isdigit() \
        else None


@console_router.post("/{endpoint_id}/test")
async def console_test(request: Request, space: str, endpoint_id: str, signed: Signed,
                       csrf: Annotated[str, Form()]) -> RedirectResponse:
    _checked_form(signed, csrf)
    await send_test(_ops(request), signed.principal, space, endpoint_id)
    return RedirectResponse(f"{_where(space, endpoint_id)}?done=test", status_code=303)


@console_router.post("/{endpoint_id}/replay")
async def console_replay(request: Request, space: str, endpoint_id: str, signed: Signed,
                         csrf: Annotated[str, Form()], since: Annotated[str, Form()]) -> Response:
    _checked_form(signed, csrf)
    try:
        replayed = await replay(_ops(request), signed.principal, space, endpoint_id, since)
    except MomentError as error:
        shown, rows = await endpoint(_ops(request), signed.principal, space, endpoint_id, limit=100)
        return page(request, "webhook.html", status=422, signed=signed, space=space, endpoint=shown,
                    deliveries=rows, tz=await _ops(request).zone(space), problem=f"Not replayed: {error}")
    return RedirectResponse(f"{_where(space, endpoint_id)}?done=replayed:{replayed.replayed}", status_code=303)


@console_router.post("/{endpoint_id}/rotate-secret")
async def console_rotate(request: Request, space: str, endpoint_id: str, signed: Signed,
                         csrf: Annotated[str, Form()]) -> HTMLResponse:
    _checked_form(signed, csrf)
    rotated = await rotate(_ops(request), signed.principal, space, endpoint_id)
    shown, rows = await endpoint(_ops(request), signed.principal, space, endpoint_id, limit=100)
    return page(request, "webhook.html", signed=signed, space=space, endpoint=shown, deliveries=rows,
                tz=await _ops(request).zone(space), secret=rotated.secret)


@console_router.post("/{endpoint_id}/enable")
async def console_enable(request: Request, space: str, endpoint_id: str, signed: Signed,
                         csrf: Annotated[str, Form()]) -> RedirectResponse:
    _checked_form(signed, csrf)
    await enable(_ops(request), signed.principal, space, endpoint_id)
    return RedirectResponse(f"{_where(space, endpoint_id)}?done=enabled", status_code=303)


@console_router.post("/{endpoint_id}/remove")
async def console_remove(request: Request, space: str, endpoint_id: str, signed: Signed,
                         csrf: Annotated[str, Form()]) -> RedirectResponse:
    _checked_form(signed, csrf)
    await remove(_ops(request), signed.principal, space, endpoint_id)
    return RedirectResponse(f"{_where(space)}?done=removed", status_code=303)
