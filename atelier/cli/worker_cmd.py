"""`atelier worker`: run jobs from the ledger on ComfyUI until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer
from rich.console import Console
from rich.logging import RichHandler

from atelier.cli.api_cmd import ALLOW_UNAUTHENTICATED_HELP
from atelier.tools.doctor import mask_secrets
from atelier.tools.exposure import check_listen_address
from atelier.tools.ledger.service import LedgerService
from atelier.tools.settings import load_settings
from atelier.tools.worker.metrics import WorkerMetrics, serve_service_metrics
from atelier.tools.worker.worker import Worker, WorkerOptions

__all__ = ["worker"]


def worker(
    comfy_url: list[str] = typer.Option(
        [], "--comfy-url", help="ComfyUI server(s) to feed (repeat the option; default: COMFYUI_URLS)."
    ),
    slots: int = typer.Option(2, min=1, help="Prompts kept inside each ComfyUI at once (2: no idle GPU gap)."),
    lease_seconds: float | None = typer.Option(None, min=2, help="Lease length (default: ATELIER_LEASE_SECONDS)."),
    metrics_port: int | None = typer.Option(None, "--metrics-port", help="Serve Prometheus /metrics on this port."),
    metrics_host: str = typer.Option("127.0.0.1", help="Address for /metrics (0.0.0.0 to let others scrape it: needs "
                                     "ATELIER_AUTH=accounts, see --allow-unauthenticated)."),
    allow_unauthenticated: bool = typer.Option(False, "--allow-unauthenticated", help=ALLOW_UNAUTHENTICATED_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every job."),
) -> None:
    """Claim jobs and run them on ComfyUI; any number of workers may share one database."""
    settings = load_settings()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)])
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if metrics_port is not None:
        check_listen_address(metrics_host, settings, server="The worker's /metrics",
                             allow_unauthenticated=allow_unauthenticated)
    options = WorkerOptions(servers=list(comfy_url) or list(settings.comfyui_urls), slots_per_server=slots,
                            lease_seconds=lease_seconds or settings.lease_seconds)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with LedgerService.open(settings) as svc:
            metrics = WorkerMetrics()
            if metrics_port is not None:
                serve_service_metrics(metrics, svc, metrics_port, metrics_host)
            work = Worker.for_service(svc, options, metrics=metrics)
            Console(stderr=True).print(
                f"worker {work.id} feeding {', '.join(map(mask_secrets, options.servers))} ({slots} slot(s) each); "
                f"outputs → {svc.outputs_description()}; Ctrl-C to stop", highlight=False,
            )
            await work.run(stop)
            Console(stderr=True).print(f"worker stopped after {work.processed} job(s)")

    asyncio.run(run())
