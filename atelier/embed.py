"""Atelier from Python: open the studio, call its tools, submit jobs, ask the supervisor, or build your own graph.

    import asyncio
    from atelier import open_atelier

    async def main() -> None:
        async with open_atelier(owner="ana") as studio:
            image = await studio.generate("a red fox in snow", seed=7)
            print(image.status, image.images[0].path)
            print((await studio.ask("How much would 10 hero images cost?")).reply)

    asyncio.run(main())

`open_atelier` opens the ledger, the Postgres checkpointer and the memory from the same settings as every other
front end (environment / .env), and, with `worker=True`, feeds ComfyUI from this process. For a graph with your
own checkpointer use `build_supervisor(deps=SupervisorDeps(settings=..., ...)).compile(checkpointer=...)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel

from atelier.adapters.langchain_tools import langchain_tools
from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.supervisor import build_supervisor
from atelier.studio import ChatServices, studio, tool_context
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.models import Job, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings
from atelier.tools.toolkit import TOOLS, AskArgs, AskResult, GenerateImageArgs, JobInfo, ToolContext, ToolSpec, run_tool

__all__ = [
    "TOOLS", "AskResult", "AtelierError", "GenerationParams", "Job", "JobInfo", "JobRequest", "LedgerService",
    "Settings", "Studio", "SupervisorDeps", "ToolContext", "ToolSpec", "build_supervisor", "langchain_tools",
    "load_settings", "open_atelier",
]


@dataclass
class Studio:
    """An open Atelier: its services, and the tools acting for one owner."""

    services: ChatServices
    tools: ToolContext

    def tool(self, name: str) -> ToolSpec:
        """A tool by name (see TOOLS)."""
        for spec in TOOLS:
            if spec.name == name:
                return spec
        raise AtelierError(f"no tool {name!r}; the tools are: {', '.join(s.name for s in TOOLS)}")

    async def call(self, name: str, **arguments: Any) -> Any:
        """Run a tool by name with keyword arguments (validated by its pydantic model)."""
        return await run_tool(self.tool(name), self.tools, arguments)

    async def generate(self, prompt: str, **options: Any) -> JobInfo:
        """Make an image and wait for it (options as generate_image's: workflow, seed, width, height, steps …)."""
        result: JobInfo = await self.call("generate_image", **GenerateImageArgs(prompt=prompt, **options).model_dump())
        return result

    async def ask(self, message: str = "", *, thread_id: str | None = None,
                  decision: Literal["approve", "reject"] | None = None) -> AskResult:
        """One turn with the supervisor (or an approval decision) in a thread; new thread when none is given."""
        result: AskResult = await self.call("ask_atelier", **AskArgs(message=message, thread_id=thread_id,
                                                                     decision=decision).model_dump())
        return result


@asynccontextmanager
async def open_atelier(settings: Settings | None = None, *, owner: str = "python", worker: bool = False,
                       llm: BaseChatModel | None = None, conninfo: str | None = None,
                       with_memory: bool = True) -> AsyncIterator[Studio]:
    """Open the studio (and a worker in this process when `worker=True`); close everything on exit."""
    chosen = settings or load_settings()
    async with studio(chosen, llm=llm, conninfo=conninfo, worker=worker, with_memory=with_memory) as services:
        yield Studio(services, tool_context(services, owner))
