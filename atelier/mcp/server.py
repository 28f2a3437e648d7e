"""The MCP server (official SDK, FastMCP): the toolkit's tools, plus workflows and recent images as resources.

Tool arguments are the toolkit's pydantic models, turned into the function signatures FastMCP reads, so MCP
clients see the same schemas as every other front end. `generate_image` answers with the image itself (MCP
image content) beside its JSON, and sends progress notifications while it waits; errors are MCP tool errors
carrying the message that names the fix. `serve_mcp` opens the services once per process (not per MCP
session: an HTTP server has many sessions, and one worker and one memory must serve them all).

Who the tools act for: over stdio (and over HTTP in local mode) the process's owner (`atelier mcp --owner`);
over HTTP in accounts mode the user behind each request's credentials (atelier/mcp/auth.py), so one
server serves many users and each sees only their own jobs, images and memory (plus shared items).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from mcp.server.fastmcp import Context, FastMCP, Image
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import ValidationError
from starlette.types import ASGIApp

from atelier.api.guard import RequestGuard
from atelier.api.outage import AWAY_MESSAGE, bound_wait, database_away
from atelier.mcp.auth import RequireCaller, principal_of
from atelier.tools.accounts.auth import Authenticator
from atelier.tools.errors import AtelierError
from atelier.tools.exposure import is_loopback, own_origins
from atelier.tools.ledger.service import ImageNotFoundError
from atelier.tools.ledger.store import JobNotFoundError
from atelier.tools.settings import Settings
from atelier.tools.toolkit import (
    TOOLS,
    ListWorkflowsArgs,
    ToolContext,
    ToolSpec,
    as_json,
    as_text,
    image_paths,
    job_info,
    list_workflows,
)

__all__ = ["acting_context", "build_mcp", "http_app", "serve_mcp", "transport_security"]

INSTRUCTIONS = (
    "Atelier makes images on the user's own ComfyUI and answers from their documents and earlier images. "
    "generate_image waits for the image and reports progress; with wait=false it returns a job id at once "
    "(check it with job_status). ask_atelier talks to the studio's planner and may ask for approval of a costly "
    "plan: answer with decision approve or reject and the same thread_id."
)
# Images larger than this are returned as a path only (MCP clients choke on huge base64 blobs).
MAX_INLINE_BYTES = 8 * 1024 * 1024


def _content(result: Any) -> list[Any]:
    """Tool result → MCP content: the first image inline (when small enough), then the JSON text."""
    content: list[Any] = []
    for path in image_paths(result)[:1]:
        if path.is_file() and path.stat().st_size <= MAX_INLINE_BYTES:
            content.append(Image(path=path))
    content.append(as_text(result))
    return content


def _function(spec: ToolSpec, current: Callable[[], ToolContext]) -> Callable[..., Any]:
    """An async function whose signature is the spec's fields (FastMCP builds the input schema from it)."""

    async def call(ctx: Context, **arguments: Any) -> list[Any]:  # type: ignore[type-arg]
        async def progress(done: float, total: float | None, message: str) -> None:
            await ctx.report_progress(done, total, message)

        try:
            result = await spec.run(current(), spec.args.model_validate(arguments), progress)
        except Exception as exc:
            if database_away(exc):  # a readable isError result; the client retries, this process keeps serving
                raise ToolError(AWAY_MESSAGE) from exc
            if isinstance(exc, AtelierError | ValidationError):
                raise ToolError(str(exc)) from exc
            raise
        return _content(result)

    parameters = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    annotations: dict[str, Any] = {"ctx": Context, "return": list[Any]}
    for name, field in spec.args.model_fields.items():
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=field.annotation,
                                            default=field))
        annotations[name] = field.annotation
    call.__signature__ = inspect.Signature(parameters, return_annotation=list[Any])  # type: ignore[attr-defined]
    call.__annotations__ = annotations
    call.__name__ = spec.name
    call.__doc__ = spec.description
    return call


def _http_request(server: FastMCP) -> Any | None:
    """The Starlette request that carried the message being handled (None over stdio)."""
    try:
        return server.get_context().request_context.request
    except ValueError:  # outside a request
        return None


def acting_context(server: FastMCP, current: Callable[[], ToolContext]) -> Callable[[], ToolContext]:
    """`current()` as the caller of the message being handled: over authenticated HTTP, its user is the owner."""

    def acting() -> ToolContext:
        ctx = current()
        request = _http_request(server)
        principal = None if request is None else principal_of(request)
        if principal is not None:
            return dataclasses.replace(ctx, owner=principal.user_id)
        if request is not None and ctx.settings.auth_mode == "accounts":
            # Fail closed: an HTTP app served without RequireCaller must not act as the process's owner.
            raise AtelierError("this request's caller is unknown; the MCP HTTP app must be served through "
                               "atelier.mcp.server.http_app in accounts mode")
        return ctx

    return acting


def build_mcp(current: Callable[[], ToolContext], *, host: str = "127.0.0.1", port: int = 8766) -> FastMCP:
    """The server: tools from the toolkit and resources, acting on `current()` as the caller of each message."""
    server = FastMCP("atelier", instructions=INSTRUCTIONS, host=host, port=port)
    acting = acting_context(server, current)
    for spec in TOOLS:
        server.add_tool(_function(spec, acting), name=spec.name, description=spec.description, structured_output=False)

    @server.resource("atelier://workflows", name="workflows", mime_type="application/json",
                     description="The workflow catalog: purpose, quality, time, cost, VRAM and accepted values.")
    async def workflows() -> str:
        return json.dumps(as_json(await list_workflows(acting(), ListWorkflowsArgs())))

    @server.resource("atelier://images/recent", name="recent-images", mime_type="application/json",
                     description="Your 20 most recent finished images (job id, prompt, file).")
    async def recent_images() -> str:
        ctx = acting()
        jobs = await ctx.ledger.list_jobs(owner=ctx.owner, status="succeeded", limit=20)
        return json.dumps([as_json(job_info(ctx, job)) for job in jobs])

    @server.resource("atelier://jobs/{job_id}/image", name="job-image", mime_type="image/png",
                     description="The first image of one of your finished jobs.")
    async def job_image(job_id: str) -> bytes:
        ctx = acting()
        try:
            return (await ctx.ledger.image(job_id, 0, owner=ctx.owner)).data
        except (JobNotFoundError, ImageNotFoundError) as exc:  # as for another owner's job: ids do not leak
            raise AtelierError(f"no finished image for job {job_id!r} of yours") from exc

    return server


def transport_security(settings: Settings, host: str) -> TransportSecuritySettings:
    """The MCP SDK's DNS-rebinding protection with Atelier's lists: loopback hosts, ATELIER_ALLOWED_HOSTS and the
    address it listens on; Atelier's own pages and ATELIER_ALLOWED_ORIGINS as origins (not every local port)."""
    names = ["127.0.0.1", "localhost", "[::1]", *settings.allowed_hosts]
    if host not in ("0.0.0.0", "::", "") and not is_loopback(host):
        names.append(f"[{host}]" if ":" in host else host)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                     allowed_hosts=[form for name in names for form in (name, f"{name}:*")],
                                     allowed_origins=sorted(own_origins(settings)))


def http_app(server: FastMCP, current: Callable[[], ToolContext]) -> ASGIApp:
    """The streamable HTTP app behind Atelier's RequestGuard (Host, Origin, body caps) and the SDK's own transport
    security; in accounts mode every request must name its user (RequireCaller).

    Call it once the services are open: the mode comes from `current().settings`, and the Authenticator is the
    ledger service's.
    """
    settings = current().settings
    server.settings.transport_security = transport_security(settings, server.settings.host)
    app: ASGIApp = server.streamable_http_app()
    if settings.auth_mode == "accounts":

        def authenticator() -> Authenticator:
            return current().ledger.authenticator

        app = RequireCaller(app, authenticator)
    return RequestGuard(app, settings)


async def serve_mcp(open_context: Callable[[], AbstractAsyncContextManager[ToolContext]], *, http: bool = False,
                    host: str = "127.0.0.1", port: int = 8766) -> None:
    """Open the services, then serve over stdio (one client) or streamable HTTP on host:port/mcp until stopped.

    Over HTTP in accounts mode each request acts as the user its credentials name; otherwise as the owner of the
    context `open_context` yields.
    """
    import uvicorn

    opened: list[ToolContext] = []

    def current() -> ToolContext:
        if not opened:
            raise AtelierError("Atelier's services are not open yet")
        return opened[-1]

    server = build_mcp(current, host=host, port=port)
    async with open_context() as ctx:
        bound_wait(ctx.ledger)  # during a database outage a tool call hears "retry" in seconds, not after 30 s
        opened.append(ctx)
        if not http:
            await server.run_stdio_async()
            return
        config = uvicorn.Config(http_app(server, current), host=host, port=port, log_level="warning")
        await uvicorn.Server(config).serve()
