"""LangChain, MCP, CrewAI and AutoGen show the same tools: names, descriptions and schemas equal the specs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from atelier.tools.toolkit import TOOLS, ToolContext


def schema(raw: dict[str, Any]) -> dict[str, Any]:
    """An argument schema without its top-level title and description (frameworks name their models)."""
    return {k: v for k, v in raw.items() if k not in {"title", "description"}}


def expected() -> dict[str, tuple[str, dict[str, Any]]]:
    """name → (description, schema) from the specs."""
    return {spec.name: (spec.description, schema(spec.args.model_json_schema())) for spec in TOOLS}


def _context(tmp_path: Path) -> ToolContext:
    """A context whose services are never touched (only the wrappers' declarations are compared)."""
    from atelier.tools.settings import load_settings

    return ToolContext(settings=load_settings(data_dir=tmp_path), ledger=None, owner="x")  # type: ignore[arg-type]


def test_langchain_tools_match_the_specs(tmp_path: Path) -> None:
    from atelier.adapters.langchain_tools import langchain_tools

    found = {t.name: (t.description, schema(t.tool_call_schema.model_json_schema()))  # type: ignore[union-attr]
             for t in langchain_tools(_context(tmp_path))}
    assert found == expected()


@pytest.mark.asyncio
async def test_mcp_tools_match_the_specs(tmp_path: Path) -> None:
    from atelier.mcp.server import build_mcp

    context = _context(tmp_path)
    server = build_mcp(lambda: context)
    found = {t.name: (t.description, schema(t.inputSchema)) for t in await server.list_tools()}
    assert found == expected()


@pytest.mark.asyncio
async def test_crewai_tools_match_the_specs(tmp_path: Path) -> None:
    from atelier.adapters.crewai import crew_tools

    found = {t.name: (t.description, schema(t.args_schema.model_json_schema())) for t in crew_tools(_context(tmp_path))}
    assert found == expected()


@pytest.mark.asyncio
async def test_autogen_tools_match_the_specs(tmp_path: Path) -> None:
    from autogen import AssistantAgent, UserProxyAgent

    from atelier.adapters.autogen import ollama_llm_config, register_tools

    context = _context(tmp_path)
    caller = AssistantAgent("caller", llm_config=ollama_llm_config(context.settings))
    executor = UserProxyAgent("executor", human_input_mode="NEVER", code_execution_config=False)
    register_tools(caller, executor, context)
    offered = cast(Any, caller.llm_config)["tools"]
    found = {t["function"]["name"]: (t["function"]["description"], schema(t["function"]["parameters"]))
             for t in offered}
    assert found == expected()
