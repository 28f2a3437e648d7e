"""`atelier mcp`: serve Atelier's tools to MCP clients (Claude Code, Claude Desktop, VS Code) over stdio or HTTP."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator

import typer

from atelier.cli.api_cmd import ALLOW_UNAUTHENTICATED_HELP

__all__ = ["mcp"]


def mcp(
    http: bool = typer.Option(False, "--http", help="Serve streamable HTTP on HOST:PORT/mcp instead of stdio. With "
                              "ATELIER_AUTH=accounts each request must carry a token or an API key (`atelier users key "
                              "NAME`), is refused with 401/403 otherwise, and sees only that user's work."),
    host: str = typer.Option("127.0.0.1", help="Address for --http (0.0.0.0 for other machines: needs "
                             "ATELIER_AUTH=accounts, see --allow-unauthenticated)."),
    port: int = typer.Option(8766, min=1, max=65535, help="Port for --http."),
    owner: str = typer.Option("mcp", help="Whose jobs, images and documents the tools see. Ignored by --http with "
                              "ATELIER_AUTH=accounts (each request acts as the user its 'Authorization: Bearer …' or "
                              "'X-API-Key' names); over stdio, a private pipe without credentials, it always applies."),
    worker: bool = typer.Option(True, "--worker/--no-worker",
                                help="Also run a ledger worker here (off when your workers run elsewhere)."),
    allow_unauthenticated: bool = typer.Option(False, "--allow-unauthenticated", help=ALLOW_UNAUTHENTICATED_HELP),
) -> None:
    """Tools: generate_image, submit_job, job_status, list_workflows, search_images, search_documents, find_prompts,
    ask_atelier, showcase, get_showcase."""
    import asyncio

    from atelier.tools.exposure import check_listen_address
    from atelier.tools.ledger.database import install_exit_signal_handlers
    from atelier.tools.settings import load_settings

    # stdout is the protocol under stdio: every log line goes to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    if http:  # before the heavy imports: a refusal is immediate
        check_listen_address(host, settings, server="The MCP server", allow_unauthenticated=allow_unauthenticated)

    from atelier.mcp.server import serve_mcp
    from atelier.studio import studio, tool_context
    from atelier.tools.toolkit import ToolContext

    @contextlib.asynccontextmanager
    async def open_context() -> AsyncIterator[ToolContext]:
        async with studio(settings, worker=worker) as services:
            yield tool_context(services, owner)

    install_exit_signal_handlers()  # a SIGTERM (client or uvicorn) ends in a normal exit: atexit runs
    asyncio.run(serve_mcp(open_context, http=http, host=host, port=port))
