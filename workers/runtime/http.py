"""/metrics, /healthz and /readyz of one worker process."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workers.runtime.health import WorkerHealth
from workers.runtime.metrics import Metrics

LOOP_STALE_AFTER_S = 30.0


def build_http_app(metrics: Metrics, healths: list[WorkerHealth]) -> web.Application:
    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        now = time.monotonic()
        stale = [h.name for h in healths if now - h.last_loop_at > LOOP_STALE_AFTER_S]
        status = 503 if stale else 200
        return web.json_response({"alive": not stale, "stale_loops": stale}, status=status)

    async def readyz(_: web.Request) -> web.Response:
        workers = {h.name: {"ready": h.ready, "partitions": h.assigned_partitions,
                            "not_ready_because": h.reasons_not_ready()} for h in healths}
        ready = all(h.ready for h in healths)
        return web.json_response({"ready": ready, "workers": workers}, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def start_http(metrics: Metrics, healths: list[WorkerHealth], port: int) -> web.AppRunner:
    runner = web.AppRunner(build_http_app(metrics, healths), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
