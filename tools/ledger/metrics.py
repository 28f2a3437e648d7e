"""Prometheus metrics of a worker: its own counters and histograms, plus the ledger-wide series read at scrape time
(tools/ledger/usage_collector.py) through the worker's own connection pool.

A ComfyUI URL becomes a label only as `server_label(url)`: scheme://host:port, never user info, path or query.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Generic, TypeVar
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tools.ledger.usage_collector import LedgerPool, UsageCollector

if TYPE_CHECKING:
    from tools.ledger.store import JobLedger

__all__ = ["ByServer", "WorkerMetrics", "serve_metrics", "server_label"]

_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

M = TypeVar("M", Counter, Gauge)


def server_label(url: str) -> str:
    """A server URL as a metric label: scheme://host:port only (credentials, path and query stay out of metrics)."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:  # an unparsable port or host
        return "invalid-url"
    if not parts.scheme or not host:
        return "invalid-url"
    scheme = parts.scheme.lower()
    port = port if port is not None else _DEFAULT_PORTS.get(scheme)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" if port is None else f"{scheme}://{shown}:{port}"


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


def serve_metrics(metrics: WorkerMetrics, ledger: JobLedger, port: int, host: str = "127.0.0.1",
                  *, alive_seconds: float = 90.0) -> None:
    """Serve /metrics on host:port from a background thread (worker metrics + the ledger-wide series).

    Call it on the ledger's event loop: each scrape reads the ledger-wide series through the ledger's pool on that
    loop (no connection of its own). They are the job API's too, so a stack scraped only through its workers
    still has every series the alerts and the dashboard use.
    """
    source = LedgerPool(ledger.pool, asyncio.get_running_loop())
    metrics.registry.register(UsageCollector(source, alive_seconds=alive_seconds))
    start_http_server(port, addr=host, registry=metrics.registry)
