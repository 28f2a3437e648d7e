"""Prometheus metrics of a worker: its own counters and histograms, plus the ledger-wide series read at scrape time
(tools/ledger/usage_collector.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from tools.ledger.usage_collector import UsageCollector

__all__ = ["WorkerMetrics", "serve_metrics"]

_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


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


def serve_metrics(metrics: WorkerMetrics, conninfo: str, port: int, host: str = "127.0.0.1",
                  *, alive_seconds: float = 90.0) -> None:
    """Serve /metrics on host:port from a background thread (worker metrics + the ledger-wide series).

    The ledger-wide series (jobs, queue, per-owner usage, worker heartbeats) are the job API's too, so a stack
    scraped only through its workers still has every series the alerts and the dashboard use.
    """
    metrics.registry.register(UsageCollector(conninfo, alive_seconds=alive_seconds))
    start_http_server(port, addr=host, registry=metrics.registry)
