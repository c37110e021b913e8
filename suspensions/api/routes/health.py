"""Liveness, readiness and metrics, outside the API's document: /healthz for anyone, /metrics and
/readyz for an admin token only (their home is the internal port, ``server.py``), and robots.txt."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from suspensions.api.deps import Ops, internal
from workers.runtime.metrics import Metrics

router = APIRouter(include_in_schema=False)


@router.get("/metrics", dependencies=[Depends(internal)])
async def metrics_view(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


@router.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"alive": True}


@router.get("/readyz", dependencies=[Depends(internal)])
async def readyz(ops: Ops) -> Response:
    reasons = await ops.not_ready_because()
    return JSONResponse({"ready": not reasons, "not_ready_because": reasons}, status_code=503 if reasons else 200)


@router.get("/robots.txt")
async def robots() -> PlainTextResponse:
    return PlainTextResponse("User-agent: *\nDisallow: /\n")
