"""Prometheus metrics of a worker: its own counters and histograms, plus the ledger-wide series read at scrape time
(tools/metrics/usage.py) through the worker's own connection pool.

The ledger-wide series name every user, so with accounts (ATELIER_AUTH=accounts) the worker's /metrics, like the
job API's, answers only an admin's credentials (`Authorization: Bearer <key or token>` or `X-API-Key`). A ComfyUI
URL becomes a label only as `server_label(url)`: scheme://host:port, never user info, path or query.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from atelier.tools.accounts.auth import Authenticator
from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.accounts.tokens import AuthError
from atelier.tools.metrics.labels import server_label
from atelier.tools.metrics.usage import LedgerPool, UsageCollector
from atelier.tools.settings import Settings

if TYPE_CHECKING:
    from atelier.tools.ledger.service import LedgerService
    from atelier.tools.ledger.store import JobLedger

__all__ = ["ByServer", "WorkerMetrics", "serve_metrics", "serve_service_metrics", "server_label"]

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

M = TypeVar("M", Counter, Gauge)


class ByServer(Generic[M]):
    """A metric labelled by ComfyUI server: `labels(url)` files the sample under `server_label(url)`."""

    def __init__(self, metric: M) -> None:
        self.metric: M = metric

    def labels(self, server: str) -> M:
        """The child for this server (as scheme://host:port)."""
        child: M = self.metric.labels(server_label(server))
        return child


class WorkerMetrics:
    """What one worker measures itself, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.finished = Counter("atelier_worker_jobs", "Jobs this worker finished, by outcome.", ["status"], registry=r)
        self.job_seconds = Histogram(
            "atelier_job_duration_seconds", "From claim to recorded result.", buckets=_DURATION_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "atelier_job_queue_wait_seconds", "From submit to first claim.", buckets=_DURATION_BUCKETS, registry=r
        )
        self.gpu_seconds = ByServer(Counter(
            "atelier_gpu_seconds", "Seconds ComfyUI spent executing this worker's prompts.", ["server"], registry=r
        ))
        self.vram_free = ByServer(Gauge(
            "atelier_comfyui_vram_free_bytes", "Free VRAM ComfyUI last reported.", ["server"], registry=r
        ))
        self.vram_claimable = ByServer(Gauge(
            "atelier_comfyui_vram_claimable_bytes",
            "Free VRAM plus what hot-swap could reclaim (ComfyUI's models, idle Ollama models): what claims use.",
            ["server"], registry=r,
        ))
        self.hotswap_unloads = Counter(
            "atelier_hotswap_unloads", "Unloads to make room for a job: one POST /free, or one Ollama model.",
            ["target"], registry=r,
        )
        self.heartbeats = Counter("atelier_worker_heartbeats", "Lease heartbeats sent.", registry=r)
        self.held = Gauge("atelier_worker_jobs_held", "Jobs this worker holds now.", registry=r)
        self.retries = Counter("atelier_worker_retries", "Transient failures sent back to the queue.", registry=r)
        self.database_retries = Counter(
            "atelier_worker_database_retries",
            "Ledger statements sent again because the database was away (a restart, an outage).", registry=r,
        )
        self.slot_restarts = Counter(
            "atelier_worker_slot_restarts", "Job loops (slots) that died of an unexpected error and were restarted.",
            registry=r,
        )
        self.slots_live = Gauge("atelier_worker_slots_live", "Job loops (slots) running now.", registry=r)


class _Quiet(WSGIRequestHandler):
    """No access log on stderr for every scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


class _Server(ThreadingWSGIServer):
    """prometheus_client's threaded WSGI server, on IPv6 when the address is one."""

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler]) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)


def _admins_only(app: WsgiApp, auth: Authenticator, loop: asyncio.AbstractEventLoop) -> WsgiApp:
    """`app` behind an admin check of the request's credentials (run on the ledger's loop)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        check = auth.principal(environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_X_API_KEY"))
        try:
            principal = asyncio.run_coroutine_threadsafe(check, loop).result(timeout=10)
            if not principal.is_admin:
                raise AuthError(f"/metrics shows every user's usage: {principal.user_id} is not an admin; scrape it "
                                "with an admin's key", status=403)
        except AuthError as exc:
            status = "401 Unauthorized" if exc.status == 401 else "403 Forbidden"
            headers = [("Content-Type", "text/plain; charset=utf-8")]
            if exc.status == 401:
                headers.append(("WWW-Authenticate", "Bearer"))
            start_response(status, headers)
            return [str(exc).encode()]
        return app(environ, start_response)

    return guarded


def serve_service_metrics(metrics: WorkerMetrics, service: LedgerService, port: int,
                          host: str = "127.0.0.1") -> ThreadingWSGIServer:
    """`serve_metrics` for a LedgerService (what front ends hold)."""
    return serve_metrics(metrics, service.ledger, service.settings, port, host)


def serve_metrics(metrics: WorkerMetrics, ledger: JobLedger, settings: Settings, port: int,
                  host: str = "127.0.0.1") -> ThreadingWSGIServer:
    """Serve /metrics on host:port from a background thread (worker metrics + the ledger-wide series).

    Call it on the ledger's event loop: each scrape reads the ledger-wide series through the ledger's pool on that
    loop (no connection of its own), and with accounts checks the scraper is an admin the same way. The series are
    the job API's too, so a stack scraped only through its workers still has every series the alerts and the
    dashboard use. Heartbeats come every lease/3: a worker silent for three whole leases is taken for gone.
    Returns the server (`shutdown()` stops it).
    """
    loop = asyncio.get_running_loop()
    metrics.registry.register(UsageCollector(LedgerPool(ledger.pool, loop), alive_seconds=3 * settings.lease_seconds))
    app: WsgiApp = make_wsgi_app(metrics.registry)
    if settings.auth_mode == "accounts":
        app = _admins_only(app, Authenticator(settings, UserDirectory(ledger.pool)), loop)
    server = make_server(host, port, app, _Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server
