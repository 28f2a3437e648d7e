"""Prometheus metrics of a worker: its own counters and histograms, plus ledger-wide gauges read at scrape time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tools.ledger.usage_collector import UsageCollector

__all__ = ["LedgerCollector", "WorkerMetrics", "serve_metrics"]

log = logging.getLogger(__name__)

_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_STATUSES = ("queued", "submitted", "running", "succeeded", "failed", "cancelled")


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
        self.gpu_seconds = Counter(
            "atelier_gpu_seconds", "Seconds ComfyUI spent executing this worker's prompts.", ["server"], registry=r
        )
        self.vram_free = Gauge(
            "atelier_comfyui_vram_free_bytes", "Free VRAM ComfyUI last reported.", ["server"], registry=r
        )
        self.vram_claimable = Gauge(
            "atelier_comfyui_vram_claimable_bytes",
            "Free VRAM plus what hot-swap could reclaim (ComfyUI's models, idle Ollama models): what claims use.",
            ["server"], registry=r,
        )
        self.hotswap_unloads = Counter(
            "atelier_hotswap_unloads", "Unloads to make room for a job: one POST /free, or one Ollama model.",
            ["target"], registry=r,
        )
        self.heartbeats = Counter("atelier_worker_heartbeats", "Lease heartbeats sent.", registry=r)
        self.held = Gauge("atelier_worker_jobs_held", "Jobs this worker holds now.", registry=r)
        self.retries = Counter("atelier_worker_retries", "Transient failures sent back to the queue.", registry=r)


class LedgerCollector(Collector):
    """Ledger-wide numbers read from PostgreSQL on each scrape: jobs by status, queue depth, cache hits."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    def _query(self) -> tuple[dict[str, int], int]:
        """(jobs per status, jobs answered from the cache)."""
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
            rows: list[Any] = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
            hits: Any = conn.execute("SELECT count(*) FROM jobs WHERE cached_from IS NOT NULL").fetchone()
        return {str(status): int(n) for status, n in rows}, int(hits[0]) if hits else 0

    def collect(self) -> Iterator[Metric]:
        """Yield the gauges; nothing (and a log line) when the database cannot be read."""
        try:
            by_status, hits = self._query()
        except psycopg.Error as exc:
            log.warning("metrics: cannot read the ledger: %s", exc)
            return
        jobs = GaugeMetricFamily("atelier_jobs", "Jobs in the ledger by status.", labels=["status"])
        for status in _STATUSES:
            jobs.add_metric([status], by_status.get(status, 0))
        yield jobs
        yield GaugeMetricFamily("atelier_queue_depth", "Jobs waiting for a worker.", value=by_status.get("queued", 0))
        yield CounterMetricFamily("atelier_cache_hits", "Jobs answered from the result cache.", value=hits)


def serve_metrics(metrics: WorkerMetrics, conninfo: str, port: int, host: str = "127.0.0.1",
                  *, alive_seconds: float = 90.0) -> None:
    """Serve /metrics on host:port from a background thread (worker metrics + the ledger-wide series).

    The ledger-wide series (jobs, queue, per-owner usage, worker heartbeats) are the job API's too, so a stack
    scraped only through its workers still has every series the alerts and the dashboard use.
    """
    metrics.registry.register(LedgerCollector(conninfo))
    metrics.registry.register(UsageCollector(conninfo, alive_seconds=alive_seconds))
    start_http_server(port, addr=host, registry=metrics.registry)
