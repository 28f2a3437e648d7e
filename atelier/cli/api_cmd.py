"""`atelier api`: serve the job REST API on its own (it is also mounted on the LangGraph server)."""

from __future__ import annotations

import typer

__all__ = ["ALLOW_UNAUTHENTICATED_HELP", "api"]

ALLOW_UNAUTHENTICATED_HELP = ("Listen beyond loopback even with ATELIER_AUTH=local, where nobody logs in: anyone who "
                              "reaches the address acts as the admin (also ATELIER_ALLOW_UNAUTHENTICATED=true). "
                              "Prefer ATELIER_AUTH=accounts.")


def api(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for other machines: needs "
                             "ATELIER_AUTH=accounts, see --allow-unauthenticated)."),
    port: int = typer.Option(8765, min=1, max=65535, help="Port."),
    allow_unauthenticated: bool = typer.Option(False, "--allow-unauthenticated", help=ALLOW_UNAUTHENTICATED_HELP),
) -> None:
    """Serve POST/GET/DELETE /jobs, images, /batches, /workflows and /health (OpenAPI at /docs)."""
    import uvicorn

    from atelier.api.jobs import build_job_api
    from atelier.tools.exposure import check_listen_address
    from atelier.tools.ledger.database import install_exit_signal_handlers
    from atelier.tools.settings import load_settings

    settings = load_settings()
    check_listen_address(host, settings, server="The job API", allow_unauthenticated=allow_unauthenticated)
    install_exit_signal_handlers()  # uvicorn re-raises a caught SIGTERM under it: a normal exit, atexit runs
    # Idle connections stay open longer than clients keep theirs (httpx, Prometheus, browsers: 5 s), so a request
    # never leaves on a connection the server is closing (bench/load.py's first failure: a dropped POST /jobs).
    uvicorn.run(build_job_api(settings), host=host, port=port, log_level="warning", timeout_keep_alive=75)
