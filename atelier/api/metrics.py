"""`GET /metrics` on the job API: ledger-wide series, ComfyUI probes and the API's own request counts and latency.

`add_metrics_route(api, settings)` gives the app its own registry (so several apps in one process never
collide), counts every HTTP request by method, route template and status, and serves Prometheus' text format.
The ledger's series are read at scrape time through the pool of the app's LedgerService (no connection per scrape).
In accounts mode the series name every user, so only an admin's credentials may read them (Prometheus sends
`Authorization: Bearer <admin key>`); local mode asks for none, like every other route there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atelier.tools.accounts.tokens import AuthError
from atelier.tools.metrics.comfy_probe import ComfyProbeCollector
from atelier.tools.metrics.usage import LedgerPool, UsageCollector
from atelier.tools.settings import Settings

__all__ = ["AppLedgerCollector", "RequestMetrics", "add_metrics_route", "require_admin"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class AppLedgerCollector(Collector):
    """The ledger-wide series of the database `api.state.ledger` has open (nothing but `ledger_up 0` before).

    They are read through that ledger's pool on the app's event loop, which the route notes in `loop` before it
    collects in a thread.
    """

    def __init__(self, api: FastAPI, settings: Settings) -> None:
        self.api = api
        self.loop: asyncio.AbstractEventLoop | None = None
        # Heartbeats come every lease/3: a worker silent for three whole leases is taken for gone.
        self._usage = UsageCollector(self._source, alive_seconds=3 * settings.lease_seconds)

    def _source(self) -> LedgerPool | None:
        """The app's ledger pool and loop (None until both are known)."""
        service = getattr(self.api.state, "ledger", None)
        if service is None or self.loop is None:
            return None
        return LedgerPool.for_service(service, self.loop)

    def collect(self) -> Iterator[Metric]:
        """Delegate to the UsageCollector on the app's pool."""
        if getattr(self.api.state, "ledger", None) is None:
            yield GaugeMetricFamily("atelier_ledger_up", "1 when the last scrape could read the ledger, else 0.",
                                    value=0)
            return
        yield from self._usage.collect()


async def require_admin(request: Request, settings: Settings) -> None:
    """In accounts mode, the request's credentials must be an admin's (AuthError: 401 without, 403 for a user)."""
    if settings.auth_mode != "accounts":
        return
    service = getattr(request.app.state, "ledger", None)
    if service is None:
        raise HTTPException(503, "the ledger is not open yet, so credentials cannot be checked; try again shortly")
    principal = await service.authenticator.principal(request.headers.get("authorization"),
                                                      request.headers.get("x-api-key"))
    if not principal.is_admin:
        raise AuthError(f"/metrics shows every user's usage: {principal.user_id} is not an admin; scrape it with an "
                        "admin's key (Prometheus: authorization: {credentials: <key>})", status=403)


class RequestMetrics:
    """ASGI middleware: count HTTP requests by method, route template and status, and time them."""

    def __init__(self, app: ASGIApp, *, requests: Counter, seconds: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; record it once the response has started (or failed)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route: Any = scope.get("route")
            template = str(getattr(route, "path", "")) or "unmatched"
            method = str(scope.get("method", ""))
            self.requests.labels(method, template, str(status)).inc()
            self.seconds.labels(method, template).observe(time.perf_counter() - started)


def add_metrics_route(api: FastAPI, settings: Settings) -> CollectorRegistry:
    """Add `GET /metrics` and the request-counting middleware to `api`; return the app's registry."""
    registry = CollectorRegistry()
    requests = Counter("atelier_api_requests", "HTTP requests to the job API by method, route and status.",
                       ["method", "route", "status"], registry=registry)
    seconds = Histogram("atelier_api_request_seconds", "Time to answer HTTP requests to the job API.",
                        ["method", "route"], buckets=_LATENCY_BUCKETS, registry=registry)
    ledger = AppLedgerCollector(api, settings)
    registry.register(ledger)
    registry.register(ComfyProbeCollector(settings.comfyui_urls))
    api.add_middleware(RequestMetrics, requests=requests, seconds=seconds)
    api.state.metrics_registry = registry

    @api.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition (an admin's, with accounts); probes run in a thread, queries on the pool."""
        await require_admin(request, settings)
        ledger.loop = asyncio.get_running_loop()
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return registry
