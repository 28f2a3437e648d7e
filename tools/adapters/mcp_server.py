"""The MCP server (official SDK, FastMCP): the toolkit's tools, plus workflows and recent images as resources.

Tool arguments are the toolkit's pydantic models, turned into the function signatures FastMCP reads, so MCP
clients see the same schemas as every other front end. `generate_image` answers with the image itself (MCP
image content) beside its JSON, and sends progress notifications while it waits; errors are MCP tool errors
carrying the message that names the fix. `serve_mcp` opens the services once per process (not per MCP
session: an HTTP server has many sessions, and one worker and one memory must serve them all).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from mcp.server.fastmcp import Context, FastMCP, Image
from mcp.server.fastmcp.exceptions import ToolError
from pydantic import ValidationError

from tools.errors import AtelierError
from tools.toolkit import (
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

__all__ = ["build_mcp", "serve_mcp"]

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
        tools = current()

        async def progress(done: float, total: float | None, message: str) -> None:
            await ctx.report_progress(done, total, message)

        try:
            result = await spec.run(tools, spec.args.model_validate(arguments), progress)
        except (AtelierError, ValidationError) as exc:
            raise ToolError(str(exc)) from exc
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


def build_mcp(current: Callable[[], ToolContext], *, host: str = "127.0.0.1", port: int = 8766) -> FastMCP:
    """The server: tools from the toolkit and resources, acting on the context `current()` returns."""
    server = FastMCP("atelier", instructions=INSTRUCTIONS, host=host, port=port)
    for spec in TOOLS:
        server.add_tool(_function(spec, current), name=spec.name, description=spec.description, structured_output=False)

    @server.resource("atelier://workflows", name="workflows", mime_type="application/json",
                     description="The workflow catalog: purpose, quality, time, cost, VRAM and accepted values.")
    async def workflows() -> str:
        return json.dumps(as_json(await list_workflows(current(), ListWorkflowsArgs())))

    @server.resource("atelier://images/recent", name="recent-images", mime_type="application/json",
                     description="Your 20 most recent finished images (job id, prompt, file).")
    async def recent_images() -> str:
        ctx = current()
        jobs = await ctx.ledger.list_jobs(owner=ctx.owner, status="succeeded", limit=20)
        return json.dumps([as_json(job_info(ctx, job)) for job in jobs])

    @server.resource("atelier://jobs/{job_id}/image", name="job-image", mime_type="image/png",
                     description="The first image of one of your finished jobs.")
    async def job_image(job_id: str) -> bytes:
        ctx = current()
        job = await ctx.ledger.get(job_id)
        if job.owner != ctx.owner or not job.outputs:
            raise AtelierError(f"no finished image for job {job_id!r} of yours")
        return await asyncio.to_thread(ctx.ledger.store.read, job.outputs[0].uri)

    return server



async def serve_mcp(open_context: Callable[[], AbstractAsyncContextManager[ToolContext]], *, http: bool = False,
                    host: str = "127.0.0.1", port: int = 8766) -> None:
    """Open the services, then serve over stdio (one client) or streamable HTTP on host:port/mcp until stopped."""
    import uvicorn

    opened: list[ToolContext] = []

    def current() -> ToolContext:
        if not opened:
            raise AtelierError("Atelier's services are not open yet")
        return opened[-1]

    server = build_mcp(current, host=host, port=port)
    async with open_context() as ctx:
        opened.append(ctx)
        if not http:
            await server.run_stdio_async()
            return
        config = uvicorn.Config(server.streamable_http_app(), host=host, port=port, log_level="warning")
        await uvicorn.Server(config).serve()
