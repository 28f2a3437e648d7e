"""LangChain StructuredTools generated from the toolkit (same names, descriptions and argument models)."""

from __future__ import annotations

from typing import Any

from langchain_core.tools import StructuredTool, ToolException
from pydantic import ValidationError

from atelier.tools.errors import AtelierError
from atelier.tools.toolkit import TOOLS, ToolContext, ToolSpec, as_text

__all__ = ["langchain_tools"]


def _tool(spec: ToolSpec, ctx: ToolContext) -> StructuredTool:
    """One StructuredTool; errors come back to the model as the message naming the fix."""

    async def call(**kwargs: Any) -> str:
        try:
            return as_text(await spec.run(ctx, spec.args.model_validate(kwargs), _ignore))
        except (AtelierError, ValidationError) as exc:
            raise ToolException(str(exc)) from exc

    return StructuredTool(name=spec.name, description=spec.description, args_schema=spec.args, coroutine=call,
                          handle_tool_error=True)


async def _ignore(_done: float, _total: float | None, _message: str) -> None:
    """LangChain tools have no progress channel."""


def langchain_tools(ctx: ToolContext) -> list[StructuredTool]:
    """Every toolkit tool as a LangChain tool acting on `ctx`."""
    return [_tool(spec, ctx) for spec in TOOLS]
