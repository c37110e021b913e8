"""Liveness, readiness and metrics, outside the API's document: /healthz for anyone, /metrics and
/readyz for an admin token only (their home is the internal port, ``server.py``), and robots.txt.
/healthz and /readyz mean what the workers' do (``workers/runtime/health.py``), for the API's own entry."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from suspensions.api.deps import internal
from workers.runtime.health import liveness, readiness
from workers.runtime.metrics import Metrics

router = APIRouter(include_in_schema=False)


@router.get("/metrics", dependencies=[Depends(internal)])
async def metrics_view(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


@router.get("/healthz")
async def healthz(request: Request) -> Response:
    status, body = liveness([request.app.state.health])
    return JSONResponse(body, status_code=status)


@router.get("/readyz", dependencies=[Depends(internal)])
async def readyz(request: Request) -> Response:
    status, body = readiness([request.app.state.health])
    return JSONResponse(body, status_code=status)


@router.get("/robots.txt")
async def robots() -> PlainTextResponse:
    return PlainTextResponse("User-agent: *\nDisallow: /\n")
