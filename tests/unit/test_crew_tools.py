"""The CrewAI adapter without services: generated tools, the loop bridge, errors as text, the Ollama LLM, telemetry."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from crewai.tools.tool_failure import ToolFailure, ToolFailureReason
from crewai.utilities.agent_utils import convert_tools_to_openai_schema
from pydantic import BaseModel, Field

from atelier.adapters.crewai import (
    TELEMETRY_SWITCHES,
    AtelierCrewTool,
    ToolCall,
    build_llm,
    crew_tools,
    explain_llm_error,
    telemetry_disabled,
)
from atelier.agents.llm import LLMUnavailableError
from atelier.tools.errors import AtelierError
from atelier.tools.settings import load_settings
from atelier.tools.toolkit import TOOLS, ToolContext, ToolSpec

# crewai warns about its own deprecated fields when it reads them; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai")


def _context(tmp_path: Path, ledger: Any = None) -> ToolContext:
    """A context whose ledger is a stub (or None where no tool touches it)."""
    return ToolContext(settings=load_settings(data_dir=tmp_path), ledger=ledger, owner="ana")


class _EchoArgs(BaseModel):
    """Echo a word."""

    word: str = Field(..., min_length=1)


def _echo_spec(seen: list[tuple[asyncio.AbstractEventLoop, int]]) -> ToolSpec:
    """A spec that records the loop and thread it ran on."""

    async def echo(ctx: ToolContext, args: _EchoArgs, progress: Any) -> dict[str, str]:
        seen.append((asyncio.get_running_loop(), threading.get_ident()))
        if args.word == "boom":
            raise AtelierError("boom is not a word; try another")
        if args.word == "bug":
            raise RuntimeError("a bug")
        return {"echo": args.word, "owner": ctx.owner}

    return ToolSpec("echo", "Echo a word.", _EchoArgs, echo)


def _plain(schema: Any, defs: dict[str, Any] | None = None) -> Any:
    """A schema with `$ref`s to `defs` inlined and strict mode's `additionalProperties: false` dropped."""
    if isinstance(schema, list):
        return [_plain(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema and defs is not None:
        return _plain(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    return {key: _plain(value, defs) for key, value in schema.items()
            if not (key == "additionalProperties" and value is False)}


@pytest.mark.asyncio
async def test_generated_tools_carry_the_specs_names_descriptions_and_args_models(tmp_path: Path) -> None:
    tools = crew_tools(_context(tmp_path))
    assert [(t.name, t.description) for t in tools] == [(s.name, s.description) for s in TOOLS]
    assert all(tool.args_schema is spec.args for tool, spec in zip(tools, TOOLS, strict=True))
    assert all(type(tool) is AtelierCrewTool for tool in tools)  # one generated class, not one per tool

    # What CrewAI offers the model: our names, descriptions and property schemas. (CrewAI renders them in
    # OpenAI's strict mode: every property listed as required and additionalProperties false.)
    offered, _, _ = convert_tools_to_openai_schema(tools)
    for function, spec in zip((o["function"] for o in offered), TOOLS, strict=True):
        ours = spec.args.model_json_schema()
        assert (function["name"], function["description"]) == (spec.name, spec.description)
        assert _plain(function["parameters"]["properties"]) == _plain(ours.get("properties", {}), ours.get("$defs"))
        assert set(ours.get("required", [])) <= set(function["parameters"]["required"])

    chosen = crew_tools(_context(tmp_path), names=["generate_image", "search_documents"])
    assert [t.name for t in chosen] == ["generate_image", "search_documents"]
    with pytest.raises(AtelierError, match="no toolkit tool named nope"):
        crew_tools(_context(tmp_path), names=["nope"])


def test_crew_tools_needs_the_studio_loop(tmp_path: Path) -> None:
    with pytest.raises(AtelierError, match="event loop that opened the studio"):
        crew_tools(_context(tmp_path))


@pytest.mark.asyncio
async def test_calls_from_crewai_threads_run_on_the_owning_loop(tmp_path: Path) -> None:
    seen: list[tuple[asyncio.AbstractEventLoop, int]] = []
    calls: list[ToolCall] = []
    loop = asyncio.get_running_loop()
    tool = AtelierCrewTool.from_spec(_echo_spec(seen), _context(tmp_path), loop, calls.append)

    answers = await asyncio.gather(*(asyncio.to_thread(tool.run, word=f"w{i}") for i in range(8)))
    assert sorted(answers) == sorted(f'{{"echo": "w{i}", "owner": "ana"}}' for i in range(8))
    assert {ran for ran, _ in seen} == {loop} and {thread for _, thread in seen} == {threading.get_ident()}
    assert sorted(c.arguments["word"] for c in calls) == [f"w{i}" for i in range(8)]

    # From another loop's thread (CrewAI's native async path), awaited through the owning loop.
    assert await asyncio.to_thread(asyncio.run, tool.arun(word="async")) == '{"echo": "async", "owner": "ana"}'
    assert seen[-1][0] is loop
    assert await tool.arun(word="here") == '{"echo": "here", "owner": "ana"}'  # on the owning loop itself


@pytest.mark.asyncio
async def test_our_errors_come_back_as_text_the_agent_reads(tmp_path: Path) -> None:
    seen: list[tuple[asyncio.AbstractEventLoop, int]] = []
    calls: list[ToolCall] = []
    tool = AtelierCrewTool.from_spec(_echo_spec(seen), _context(tmp_path), asyncio.get_running_loop(),
                                     calls.append)

    failed = await asyncio.to_thread(tool.run, word="boom")
    assert isinstance(failed, ToolFailure) and failed.reason is ToolFailureReason.TOOL_REPORTED
    assert failed.as_agent_message() == "echo failed: boom is not a word; try another (code: AtelierError)"
    invalid = await asyncio.to_thread(tool.run, word="")
    assert isinstance(invalid, ToolFailure) and invalid.reason is ToolFailureReason.INVALID_INPUT
    assert invalid.message == "echo: invalid arguments: word: String should have at least 1 character"
    assert await tool.arun() == ToolFailure(message="echo: invalid arguments: word: Field required",
                                            reason=ToolFailureReason.INVALID_INPUT, code="ValidationError")
    assert [(c.result, c.error is not None) for c in calls] == [(None, True)] * 3

    # Anything else is a bug: recorded, then left to CrewAI, which reports "Error executing tool: …" to the agent.
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.to_thread(tool.run, word="bug")
    assert calls[-1].error == "RuntimeError: a bug"


@pytest.mark.asyncio
async def test_a_real_tool_without_its_service_explains_itself(tmp_path: Path) -> None:
    tools = {t.name: t for t in crew_tools(_context(tmp_path))}
    answer = await asyncio.to_thread(tools["search_documents"].run, query="sourdough")
    assert isinstance(answer, ToolFailure) and "memory is not open" in answer.message
    listed = await asyncio.to_thread(tools["list_workflows"].run)
    assert isinstance(listed, str) and '"name": "txt2img"' in listed
    asked = await asyncio.to_thread(tools["ask_atelier"].run, message="hi")
    assert isinstance(asked, ToolFailure) and "needs the supervisor" in asked.message


@pytest.mark.asyncio
async def test_a_call_on_the_loop_thread_is_refused_instead_of_hanging(tmp_path: Path) -> None:
    tool = AtelierCrewTool.from_spec(_echo_spec([]), _context(tmp_path), asyncio.get_running_loop())
    refused = tool.run(word="x")  # a sync call on the owning loop's thread would wait for itself
    assert isinstance(refused, ToolFailure) and "worker thread" in refused.message


def test_a_stopped_loop_ends_the_wait(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        tool = AtelierCrewTool.from_spec(_echo_spec([]), _context(tmp_path), loop)
        stopped = tool.run(word="x")
        assert isinstance(stopped, ToolFailure) and "not running" in stopped.message

        async def stall(ctx: ToolContext, args: _EchoArgs, progress: Any) -> None:
            loop.call_soon(loop.stop)  # the studio goes away while the tool waits
            await asyncio.sleep(3600)

        stalled = AtelierCrewTool.from_spec(ToolSpec("stall", "Wait.", _EchoArgs, stall), _context(tmp_path), loop)
        thread = threading.Thread(target=loop.run_forever)
        thread.start()
        while not loop.is_running():
            time.sleep(0.01)
        answer = stalled.run(word="x")
        thread.join(5)
        assert isinstance(answer, ToolFailure) and "stopped while a tool was running" in answer.message
        loop.run_until_complete(asyncio.sleep(0.01))  # let the cancelled call finish
    finally:
        loop.close()


def test_build_llm_uses_crewais_native_openai_compatible_ollama_provider() -> None:
    from crewai.llms.providers.openai_compatible.completion import OpenAICompatibleCompletion

    llm = build_llm(load_settings(ollama_url="http://127.0.0.1:11500", chat_model="qwen2.5:7b"))
    assert isinstance(llm, OpenAICompatibleCompletion)
    assert (llm.provider, llm.model, llm.base_url) == ("ollama", "qwen2.5:7b", "http://127.0.0.1:11500/v1")
    assert llm.supports_function_calling()
    assert build_llm(load_settings(), model="mistral").model == "mistral"


def test_ollama_failures_are_explained_with_its_url_and_the_fix() -> None:
    llm = build_llm(load_settings(ollama_url="http://10.0.0.7:11434"))
    request = httpx.Request("POST", "http://10.0.0.7:11434/v1/chat/completions")
    try:
        try:
            raise openai.APIConnectionError(request=request)
        except openai.APIConnectionError as exc:
            raise ConnectionError(f"Failed to connect to OpenAI API: {exc}") from exc
    except ConnectionError as exc:
        down = explain_llm_error(exc, llm)
    assert isinstance(down, LLMUnavailableError)
    assert str(down) == ("Ollama at http://10.0.0.7:11434 is unreachable: start it (`ollama serve`) or fix "
                         "OLLAMA_URL")
    missing = explain_llm_error(ValueError("Model llama3.2 not found: Error code: 404"), llm)
    assert missing is not None and "ollama pull llama3.2" in str(missing)
    assert explain_llm_error(RuntimeError("something else"), llm) is None


def test_telemetry_switches_are_on() -> None:
    import os

    assert os.environ["CREWAI_DISABLE_TELEMETRY"].lower() in {"true", "1"}
    assert os.environ["OTEL_SDK_DISABLED"].lower() in {"true", "1"}
    assert telemetry_disabled()


@pytest.mark.slow
def test_crewai_imported_first_still_sends_nothing() -> None:
    import os
    import subprocess
    import sys

    code = (
        "import threading, crewai\n"
        "from crewai.telemetry import Telemetry\n"
        "early = Telemetry().ready\n"
        "import atelier.adapters.crewai as crew\n"
        "names = [t.name for t in threading.enumerate()]\n"
        "print(early, crew.telemetry_disabled(), any('Span' in n for n in names))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in TELEMETRY_SWITCHES}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    # crewai's import started its exporter (the case the switches are for); ours stopped it before any kickoff
    assert result.stdout.split() == ["True", "True", "False"], result.stdout + result.stderr
