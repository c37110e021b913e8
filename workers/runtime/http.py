"""/metrics, /healthz and /readyz of one worker process."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workers.runtime.health import WorkerHealth, liveness, readiness
from workers.runtime.metrics import Metrics


def build_http_app(metrics: Metrics, healths: list[WorkerHealth]) -> web.Application:
    async def metrics_view(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        status, body = liveness(healths)
        return web.json_response(body, status=status)

    async def readyz(_: web.Request) -> web.Response:
        status, body = readiness(healths)
        return web.json_response(body, status=status)

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
