"""CrewAI agents call our tools through the fake Ollama's tool calls, the ledger's worker and the fake ComfyUI."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from atelier.adapters.crewai import (
    TELEMETRY_SWITCHES,
    ToolCall,
    build_llm,
    crew_tools,
    run_content_pipeline,
    run_crew,
    telemetry_disabled,
)
from atelier.agents.llm import LLMUnavailableError
from atelier.studio import ChatServices, tool_context
from atelier.tools.settings import Settings
from atelier.tools.toolkit import JobInfo, ToolContext
from tests.fakes.ollama_server import FakeOllama
from tests.frameworks import MODEL, open_services, openai_chats, settings_fixture, tool_call  # noqa: F401

# crewai warns about its own deprecated fields when it reads them; not ours to fix
pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.timeout(60),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai")]

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"


@pytest_asyncio.fixture
async def services(settings: Settings, machine_pg_url: str) -> AsyncIterator[ChatServices]:
    """Ledger + memory + a worker against the fake ComfyUI (the shipped corpus in the memory)."""
    async with open_services(settings, machine_pg_url, CORPUS) as opened:
        yield opened


def _offered(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tools a chat request offered, by name."""
    return {tool["function"]["name"]: tool["function"] for tool in body.get("tools") or []}


def _tool_messages(body: dict[str, Any]) -> list[str]:
    """The tool results a chat request carried back to the model."""
    return [str(m.get("content")) for m in body.get("messages", []) if m.get("role") == "tool"]


async def test_telemetry_is_off_before_anything_runs() -> None:
    import os

    assert all(os.environ.get(name) for name in TELEMETRY_SWITCHES)  # ours, or the person's own (setdefault)
    assert os.environ["OTEL_SDK_DISABLED"].lower() in {"true", "1"}
    assert telemetry_disabled()


async def test_the_loopback_guard_refuses_the_internet(loopback_only: list[str]) -> None:
    import httpx

    with pytest.raises(httpx.ConnectError):
        httpx.get("https://telemetry.crewai.com:4319/v1/traces", timeout=2)
    with pytest.raises(OSError):
        socket.create_connection(("1.1.1.1", 443), timeout=2)
    assert loopback_only == ["telemetry.crewai.com", "1.1.1.1"]
    loopback_only.clear()  # what the guard refused on purpose here is not a failure


async def test_an_agent_calls_generate_image_through_a_tooltool_call(
    services: ChatServices, settings: Settings, fake_ollama: FakeOllama, loopback_only: list[str]
) -> None:
    from crewai import Agent, Crew, Task

    fake_ollama.script(MODEL, [
        tool_call("generate_image", prompt="a paper crane on a desk", seed=11, steps=6),
        tool_call("generate_image", prompt="x", steps=0),  # invalid: the agent reads the error and goes on
        "Done: the crane is drawn.",
    ])
    calls: list[ToolCall] = []
    ctx = tool_context(services, "ana")
    tools = crew_tools(ctx, on_result=calls.append)
    agent = Agent(role="Illustrator", goal="Draw what is asked.", backstory="You draw with the studio's tools.",
                  tools=tools, llm=build_llm(settings), allow_delegation=False, max_iter=5)
    task = Task(description="Draw a paper crane.", expected_output="The image path.", agent=agent)
    started = time.perf_counter()
    output = await run_crew(Crew(agents=[agent], tasks=[task], tracing=False, cache=False))
    assert time.perf_counter() - started < 30
    assert output.raw == "Done: the crane is drawn."

    done = calls[0].result
    assert isinstance(done, JobInfo) and done.status == "succeeded" and done.seed == 11
    png = Path(str(done.images[0].path))
    assert png.is_file() and png.read_bytes().startswith(b"\x89PNG")
    assert (await services.ledger.get(done.job_id)).owner == "ana"
    assert calls[1].result is None and calls[1].error is not None and "steps" in calls[1].error
    assert output.tasks_output[0].tool_failures and output.tasks_output[0].tool_failures[0].tool_name == \
        "generate_image"

    chats = openai_chats(fake_ollama)
    assert len(chats) == 3 and all(body["model"] == MODEL for body in chats)
    offered = _offered(chats[0])
    assert set(offered) == {"generate_image", "submit_job", "job_status", "list_workflows", "search_images",
                            "search_documents", "find_prompts", "ask_atelier", "showcase", "get_showcase"}
    assert offered["generate_image"]["description"] == tools[0].description
    assert "prompt" in offered["generate_image"]["parameters"]["properties"]
    first_result = json.loads(_tool_messages(chats[1])[0])
    assert first_result["job_id"] == done.job_id and first_result["images"][0]["path"] == str(png)
    second = _tool_messages(chats[2])[-1]
    assert "steps" in second and "greater than or equal to 1" in second
    assert {path for _, path, _ in fake_ollama.requests} <= {"/v1/chat/completions", "/api/embed", "/api/ps"}
    assert telemetry_disabled()  # the crew ran without starting CrewAI's exporter


async def test_the_content_crew_researches_writes_and_illustrates(
    services: ChatServices, settings: Settings, fake_ollama: FakeOllama, loopback_only: list[str]
) -> None:
    post = "# Mugs on linen\n\nOur mugs sit on natural linen in soft morning light."
    fake_ollama.script(MODEL, [
        tool_call("search_documents", query="backdrop for photographing mugs", k=3),
        "- Mugs are photographed on a linen backdrop (brand-guide.md)",
        post,
        tool_call("generate_image", prompt="a ceramic mug on natural linen, soft morning light", seed=5, steps=4),
        "Header image ready.",
    ])
    ctx: ToolContext = tool_context(services, "ana")
    result = await run_content_pipeline(ctx, build_llm(settings), "product photos of our mugs")

    assert result.research.startswith("- Mugs are photographed") and result.post == post
    assert result.illustration == "Header image ready."
    assert [call.tool for call in result.calls] == ["search_documents", "generate_image"]
    hits = result.calls[0].result
    assert isinstance(hits, list) and hits and any("brand-guide" in hit.source for hit in hits)
    assert len(result.images) == 1
    image = result.images[0]
    assert image.status == "succeeded" and Path(str(image.images[0].path)).read_bytes().startswith(b"\x89PNG")
    assert [str(job.id) for job in await services.ledger.list_jobs(owner="ana")] == [image.job_id]

    chats = openai_chats(fake_ollama)
    assert len(chats) == 5
    # researcher: offered search_documents only; its second turn carries the passages back
    assert set(_offered(chats[0])) == {"search_documents"}
    assert "brand-guide" in _tool_messages(chats[1])[0]
    # writer: no tools, and the research is in its prompt
    assert not _offered(chats[2]) and "linen backdrop" in json.dumps(chats[2]["messages"])
    # illustrator: generate_image only, with the post as context
    assert set(_offered(chats[3])) == {"generate_image"} and "Mugs on linen" in json.dumps(chats[3]["messages"])
    assert json.loads(_tool_messages(chats[4])[0])["job_id"] == image.job_id


async def test_ollama_down_gives_our_clear_error(
    services: ChatServices, settings: Settings, closed_port_url: str, loopback_only: list[str]
) -> None:
    down = settings.model_copy(update={"ollama_url": closed_port_url})
    ctx = tool_context(services, "ana")
    started = time.perf_counter()
    with pytest.raises(LLMUnavailableError) as caught:
        await run_content_pipeline(ctx, build_llm(down), "anything")
    assert time.perf_counter() - started < 20
    message = str(caught.value)
    assert closed_port_url in message and "ollama serve" in message and "OpenAI" not in message
    assert await services.ledger.list_jobs(owner="ana") == []


async def test_a_model_not_pulled_gives_our_clear_error(
    services: ChatServices, settings: Settings, loopback_only: list[str]
) -> None:
    ctx = tool_context(services, "ana")
    with pytest.raises(LLMUnavailableError, match=r"ollama pull no-such-model"):
        await run_content_pipeline(ctx, build_llm(settings, model="no-such-model"), "anything")



async def test_native_async_kickoff_on_the_studio_loop_also_reaches_the_tools(
    services: ChatServices, settings: Settings, fake_ollama: FakeOllama, loopback_only: list[str]
) -> None:
    from crewai import Agent, Crew, CrewOutput, Task

    fake_ollama.script(MODEL, [tool_call("generate_image", prompt="a fox in snow", steps=3), "A fox."])
    calls: list[ToolCall] = []
    tools = crew_tools(tool_context(services, "ana"), names=["generate_image"], on_result=calls.append)
    agent = Agent(role="Illustrator", goal="Draw.", backstory="You draw.", tools=tools, llm=build_llm(settings),
                  max_iter=3)
    task = Task(description="Draw a fox.", expected_output="The image path.", agent=agent)
    output = await asyncio.wait_for(Crew(agents=[agent], tasks=[task], tracing=False).akickoff(), 30)
    assert isinstance(output, CrewOutput) and output.raw == "A fox."
    assert [c.tool for c in calls] == ["generate_image"] and isinstance(calls[0].result, JobInfo)
    assert calls[0].result.status == "succeeded"
