"""The operators' HTTP API (JSON, OpenAPI 3.1 at /api/openapi.json) and console, in one ASGI app.

Every route takes its principal from a dependency (a bearer token for the API, ``deps.py``; the
session cookie for the console) and calls the same service functions (``service.Operations``): one
path to each action, every query scoped by the principal, never by what the request claims. The API's
routes live in ``routes/``, one router per resource; this module builds the app around them: the
lifespan, the request metric, the error answers every route shares.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from models.moments import MomentError
from models.version import SERVICE_VERSION
from suspensions.api.capacity import register_capacity_handlers
from suspensions.api.console import register_console
from suspensions.api.edge import refuse_control_characters
from suspensions.api.routes import bulk, customers, health, invoices, lag, schedules, summary, webhooks
from suspensions.api.service import Operations
from suspensions.api.throttle import AuthThrottle
from workers.runtime.health import WorkerHealth
from workers.runtime.metrics import Metrics
from workers.runtime.retention import Pruner, api_rules

API_ROUTERS = (customers.router, bulk.router, invoices.router, schedules.router, lag.router, summary.router,
               webhooks.router)


def _say_service_version(app: FastAPI) -> None:
    """The document's ``info.version`` stays the API's version ("1", its ``/api/v1`` paths), which changes
    only with a breaking change; the service's release that serves it is ``info.x-service-version``."""
    document = app.openapi

    def with_service_version() -> dict[str, Any]:
        schema = document()
        schema["info"]["x-service-version"] = SERVICE_VERSION
        return schema

    app.openapi = with_service_version  # type: ignore[method-assign]


def build_app(operations_factory: Callable[[], Awaitable[Operations]], metrics: Metrics,
              close: Callable[[], Awaitable[None]], api_health: WorkerHealth | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        operations = app.state.operations = await operations_factory()
        app.state.throttle = AuthThrottle(operations.settings.api_auth_failures_per_minute)
        # The API process owns console sessions and bulk jobs: it prunes them (workers/runtime/retention.py).
        stop_pruning = asyncio.Event()
        pruner = Pruner(api_rules(operations.settings), operations.pool.patient(), operations.settings, metrics)
        pruning = asyncio.create_task(pruner.run(stop_pruning), name="api-retention")
        yield
        stop_pruning.set()
        pruning.cancel()
        await asyncio.gather(pruning, return_exceptions=True)
        await close()

    app = FastAPI(title="suspensions operator API", version="1", openapi_url="/api/openapi.json", docs_url=None,
                  redoc_url=None, lifespan=lifespan, dependencies=[Depends(refuse_control_characters)])
    app.state.metrics = metrics
    app.state.health = api_health or WorkerHealth("api")  # kept true by server.py's dependency checks
    _say_service_version(app)

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
    for router in API_ROUTERS:
        app.include_router(router)
    register_console(app)
    app.include_router(webhooks.console_router)
    app.include_router(health.router)
    return app
