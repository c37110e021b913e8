"""The operators' HTTP API (JSON, OpenAPI 3.1 at /api/openapi.json) and console, in one ASGI app.

Every route takes its principal from a dependency (a bearer token for the API, the session cookie
for the console) and calls the same service functions (``service.Operations``): one path to each
action, every query scoped by the principal, never by what the request claims.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError

from models import TEXT_MAX_LENGTH, Action, MissedInvoices, SuspensionState
from models.moments import MomentError
from suspensions import access
from suspensions.access import Principal, Role
from suspensions.api.capacity import register_capacity_handlers
from suspensions.api.edge import check_bulk_lines, refuse_control_characters
from suspensions.api.service import Operations
from suspensions.api.throttle import AuthThrottle
from workers.runtime.broker_check import check_broker
from workers.runtime.db.pool import database_answers
from workers.runtime.metrics import Metrics

# --- request and response models (they are the OpenAPI document) ---------------------------------


class SuspendRequest(BaseModel):
    note: str | None = Field(default=None, max_length=TEXT_MAX_LENGTH)
    at: str | None = Field(default=None, description="Schedule it: ISO 8601 with an offset, or a local date or "
                                                     "date-time read in the space's time zone")
    until: str | None = Field(default=None, description="Also schedule the lift then (same format)")


class LiftRequest(BaseModel):
    note: str | None = Field(default=None, max_length=TEXT_MAX_LENGTH)
    missed_invoices: MissedInvoices = MissedInvoices.BILL
    at: str | None = Field(default=None, description="Schedule it (same format as a suspension's)")


class Accepted(BaseModel):
    command_id: str


class Applied(BaseModel):
    command_id: str
    outcome: str
    state: SuspensionState | None


class CustomerPage(BaseModel):
    customers: list[SuspensionState]
    next_cursor: str | None


class BulkAccepted(BaseModel):
    bulk_id: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No token, or an unknown or revoked one"},
    403: {"description": "The token's role may not do this"},
    404: {"description": "No such customer here (another space's answers the same)"},
    503: {"description": "Busy: no database connection came free in time; retry after `Retry-After` seconds"},
}

# A suspend or lift: accepted (202), or with ?wait=true applied (200) or not in time (504).
ACT_RESPONSES: dict[int | str, dict[str, Any]] = ERRORS | {
    200: {"model": Applied, "description": "With ?wait=true: applied"},
    504: {"description": "With ?wait=true: not applied in time"},
}


# --- the app -----------------------------------------------------------------------------------


def build_app(operations_factory: Callable[[], Awaitable[Operations]], metrics: Metrics,
              close: Callable[[], Awaitable[None]]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.operations = await operations_factory()
        app.state.throttle = AuthThrottle(app.state.operations.settings.api_auth_failures_per_minute)
        yield
        await close()

    app = FastAPI(title="suspensions operator API", version="1", openapi_url="/api/openapi.json", docs_url=None,
                  redoc_url=None, lifespan=lifespan, dependencies=[Depends(refuse_control_characters)])
    app.state.metrics = metrics

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "(unmatched)")
        metrics.http_requests.labels(route=template, method=request.method,
                                     status=str(response.status_code)).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(MomentError)
    async def bad_moment(_: Request, error: MomentError) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": ["body", "at"], "msg": str(error), "type": "moment"}]},
                            status_code=422)

    @app.exception_handler(ValidationError)
    async def bad_command(_: Request, error: ValidationError) -> JSONResponse:
        """The contract's own limits (ids, note, actor): field by field, nothing published."""
        return JSONResponse({"detail": [{"loc": ["path" if item["loc"] and item["loc"][0] in ("customer_id",
                                                                                              "space_id") else "body",
                                                 *map(str, item["loc"])],
                                         "msg": item["msg"], "type": item["type"]}
                                        for item in error.errors(include_url=False)]}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [{"loc": list(item["loc"]), "msg": item["msg"], "type": item["type"]}
                                        for item in error.errors()]}, status_code=422)

    register_capacity_handlers(app)
    register_api(app)
    from suspensions.api.console import register_console

    register_console(app)
    register_health(app, metrics)
    return app


def operations(request: Request) -> Operations:
    ops: Operations = request.app.state.operations
    return ops


def presented_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def token_principal(request: Request, ops: Operations, token: str) -> Principal | None:
    """The token's principal, or None (a failure, counted and throttled per client address); 429 for an
    address past its failures, before the token is looked up (the attempt counts until it succeeds)."""
    throttle: AuthThrottle = request.app.state.throttle
    with throttle.attempt(request) as attempt:
        async with ops.pool.acquire() as conn:
            principal = await access.principal_for_token(conn, token)
        if principal is None:
            request.app.state.metrics.auth_failures.labels(reason="unknown or revoked").inc()
            attempt.failed("unknown or revoked token", token)
        else:
            attempt.succeeded()
    return principal


async def bearer(request: Request, ops: Annotated[Operations, Depends(operations)]) -> Principal:
    """The principal of `Authorization: Bearer <token>`; 401 otherwise (counted, never logged with the token)."""
    token = presented_token(request)
    if token is None:
        request.app.state.metrics.auth_failures.labels(reason="missing").inc()
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    principal = await token_principal(request, ops, token)
    if principal is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return principal


async def internal(request: Request, ops: Annotated[Operations, Depends(operations)]) -> None:
    """/metrics and /readyz belong on the internal port (SUSPENSIONS_HTTP_PORT); here they answer only an
    admin token, and anyone else as if they did not exist (404)."""
    token = presented_token(request)
    principal = await token_principal(request, ops, token) if token is not None else None
    if principal is None or not principal.may(Role.ADMIN):
        raise HTTPException(404, "Not Found")


Who = Annotated[Principal, Depends(bearer)]
Ops = Annotated[Operations, Depends(operations)]


def register_api(app: FastAPI) -> None:
    prefix = "/api/v1/spaces/{space}"

    @app.get(f"{prefix}/customers", response_model=CustomerPage, responses=ERRORS)
    async def list_customers(space: str, who: Who, ops: Ops, suspended: bool | None = None,
                             cursor: Annotated[str, Query(max_length=200)] = "",
                             search: Annotated[str, Query(max_length=200)] = "",
                             limit: Annotated[int, Query(ge=1, le=500)] = 100) -> CustomerPage:
        """The space's customers in customer id order; pass `next_cursor` back as `cursor` for the next page."""
        states, next_cursor = await ops.customers(who, space, suspended=suspended, after=cursor, search=search,
                                                  limit=limit)
        return CustomerPage(customers=[state.to_record() for state in states], next_cursor=next_cursor)

    @app.get(f"{prefix}/customers/{{customer}}", response_model=SuspensionState, responses=ERRORS)
    async def get_customer(space: str, customer: str, who: Who, ops: Ops) -> SuspensionState:
        return (await ops.customer(who, space, customer)).to_record()

    @app.get(f"{prefix}/customers/{{customer}}/history", responses=ERRORS)
    async def get_history(space: str, customer: str, who: Who, ops: Ops) -> list[dict[str, Any]]:
        return await ops.history(who, space, customer)

    async def _act(ops: Operations, who: Principal, space: str, customer: str, action: Action, note: str | None,
                   missed: MissedInvoices | None, at: str | None, until: str | None, wait: bool, timeout: float,
                   response: Response) -> Accepted | Applied:
        acted = await ops.act(who, space, customer, action, note=note, missed=missed, at=at, until=until, wait=wait,
                              timeout_s=timeout)
        if not wait:
            response.status_code = 202
            return Accepted(command_id=acted.command.command_id)
        if acted.outcome is None:
            raise HTTPException(504, f"command {acted.command.command_id} was published but not applied in time")
        response.status_code = 200
        return Applied(command_id=acted.command.command_id, outcome=acted.outcome,
                       state=acted.state.to_record() if acted.state else None)

    @app.post(f"{prefix}/customers/{{customer}}/suspend", status_code=202, response_model=Accepted | Applied,
              responses=ACT_RESPONSES)
    async def suspend(space: str, customer: str, who: Who, ops: Ops, response: Response,
                      body: Annotated[SuspendRequest | None, Body()] = None, wait: bool = False,
                      timeout: Annotated[float, Query(gt=0, le=60)] = 10.0) -> Accepted | Applied:
        """Suspend the customer (reason `manual`), now or scheduled `at` a moment (and lifted `until` one)."""
        body = body or SuspendRequest()
        return await _act(ops, who, space, customer, Action.SUSPEND, body.note, None, body.at, body.until, wait,
                          timeout, response)

    @app.post(f"{prefix}/customers/{{customer}}/lift", status_code=202, response_model=Accepted | Applied,
              responses=ACT_RESPONSES)
    async def lift(space: str, customer: str, who: Who, ops: Ops, response: Response,
                   body: Annotated[LiftRequest | None, Body()] = None, wait: bool = False,
                   timeout: Annotated[float, Query(gt=0, le=60)] = 10.0) -> Accepted | Applied:
        """Lift the customer's suspension whatever its reasons, now or scheduled `at` a moment."""
        body = body or LiftRequest()
        return await _act(ops, who, space, customer, Action.LIFT, body.note, body.missed_invoices, body.at, None,
                          wait, timeout, response)

    @app.post(f"{prefix}/bulk", status_code=202, response_model=BulkAccepted,
              responses=ERRORS | {429: {"description": "The token runs its most bulk jobs at once already; "
                                                       "retry after `Retry-After` seconds"}},
              openapi_extra={"requestBody": {"required": True, "content": {"text/csv": {"schema": {
                  "type": "string", "description": "customer_id,space_id[,note] per line, header optional"}}}}})
    async def bulk(space: str, request: Request, who: Who, ops: Ops,
                   action: Literal["suspend", "lift"] = "suspend",
                   missed_invoices: MissedInvoices = MissedInvoices.BILL) -> BulkAccepted:
        """Suspend or lift every customer of a CSV body (the CLI's format); follow it at bulk/{bulk_id}."""
        await ops.may_start_bulk(who, space)  # a refused upload is not read
        text = (await request.body()).decode("utf-8", errors="replace")  # bounded by the edge (edge.py)
        check_bulk_lines(text, ops.settings.api_max_bulk_lines)
        chosen = Action(action)
        bulk_id = await ops.start_bulk(who, space, chosen, text, missed_invoices if chosen is Action.LIFT else None)
        return BulkAccepted(bulk_id=bulk_id)

    @app.get(f"{prefix}/bulk/{{bulk_id}}", responses=ERRORS)
    async def bulk_status(space: str, bulk_id: str, who: Who, ops: Ops) -> dict[str, Any]:
        """Progress (lines read, commands published), then the per-line report once done."""
        return await ops.bulk(who, space, bulk_id)

    @app.get(f"{prefix}/invoices/dropped", responses=ERRORS)
    async def dropped(space: str, who: Who, ops: Ops) -> dict[str, Any]:
        """Invoice jobs dropped, rebilled and waived, with totals per currency."""
        return await ops.dropped(who, space)

    @app.get(f"{prefix}/schedules", responses=ERRORS)
    async def schedules(space: str, who: Who, ops: Ops) -> list[dict[str, object]]:
        """Pending schedules, soonest first, in UTC and the space's local time."""
        return await ops.pending_schedules(who, space)

    @app.get("/api/v1/lag", responses=ERRORS)
    async def lag(who: Who, ops: Ops) -> list[dict[str, object]]:
        """What `suspensions lag --json` reports (admins only)."""
        return await ops.lag(who)


def register_health(app: FastAPI, metrics: Metrics) -> None:
    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(internal)])
    async def metrics_view() -> Response:
        return Response(generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, bool]:
        return {"alive": True}

    @app.get("/readyz", include_in_schema=False, dependencies=[Depends(internal)])
    async def readyz(ops: Ops) -> Response:
        broker = await check_broker(ops.settings, timeout_s=3)
        database = await database_answers(ops.pool)
        reasons = ([] if broker.ok else [f"not connected to Kafka: {broker}"]) + (
            [] if database else ["PostgreSQL unreachable"])
        return JSONResponse({"ready": not reasons, "not_ready_because": reasons}, status_code=503 if reasons else 200)

    @app.get("/robots.txt", include_in_schema=False)
    async def robots() -> PlainTextResponse:
        return PlainTextResponse("User-agent: *\nDisallow: /\n")
