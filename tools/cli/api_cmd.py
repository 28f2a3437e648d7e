"""`atelier api`: serve the job REST API on its own (it is also mounted on the LangGraph server)."""

from __future__ import annotations

import typer

__all__ = ["api"]


def api(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for other machines)."),
    port: int = typer.Option(8765, min=1, max=65535, help="Port."),
) -> None:
    """Serve POST/GET/DELETE /jobs, images, /batches, /workflows and /health (OpenAPI at /docs)."""
    import uvicorn

    from tools.api.jobs import build_job_api
    from tools.settings import load_settings

    uvicorn.run(build_job_api(load_settings()), host=host, port=port, log_level="warning")
