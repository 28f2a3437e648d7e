"""AutoGen (ag2's classic API) agents call our tools through the fake Ollama's tool calls and the fake ComfyUI."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from autogen import AssistantAgent, UserProxyAgent

from atelier.adapters.autogen import (
    ToolLog,
    design_pair,
    ollama_llm_config,
    register_tools,
    run_design_review,
    tool_schemas,
)
from atelier.agents.llm import LLMUnavailableError
from atelier.studio import ChatServices, tool_context
from atelier.tools.errors import AtelierError
from atelier.tools.settings import Settings
from atelier.tools.toolkit import TOOLS, JobInfo, ToolContext
from tests.fakes.ollama_server import FakeOllama
from tests.frameworks import MODEL, open_services, openai_chats, settings_fixture, tool_call  # noqa: F401

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.timeout(60)]

ALL_TOOLS = {"generate_image", "submit_job", "job_status", "list_workflows", "search_images", "search_documents",
             "find_prompts", "ask_atelier", "showcase", "get_showcase"}


@pytest_asyncio.fixture
async def services(settings: Settings, machine_pg_url: str) -> AsyncIterator[ChatServices]:
    """Ledger + memory + a worker against the fake ComfyUI."""
    async with open_services(settings, machine_pg_url) as opened:
        yield opened


def _offered(body: dict[str, Any]) -> set[str]:
    """The names of the tools a chat request offered."""
    return {tool["function"]["name"] for tool in body.get("tools") or []}


def _tool_messages(body: dict[str, Any]) -> list[str]:
    """The tool results a chat request carried back to the model."""
    return [str(m.get("content")) for m in body.get("messages", []) if m.get("role") == "tool"]


def _pair(settings: Settings) -> tuple[AssistantAgent, UserProxyAgent]:
    """The user's notes' pair: an assistant on Ollama and a user proxy that only executes tools."""
    assistant = AssistantAgent("assistant", llm_config=ollama_llm_config(settings))
    user = UserProxyAgent("user", human_input_mode="NEVER", code_execution_config=False, llm_config=False,
                          is_termination_msg=lambda m: "TERMINATE" in str(m.get("content") or ""),
                          max_consecutive_auto_reply=4)
    return assistant, user


# --- (a) the schemas ---------------------------------------------------------------------------------------------


async def test_registered_schemas_equal_the_specs(settings: Settings) -> None:
    from atelier.adapters.langchain_tools import langchain_tools
    from atelier.mcp.server import build_mcp

    ctx = ToolContext(settings=settings, ledger=cast(Any, None), owner="ana")  # registration touches no service
    assistant, user = _pair(settings)
    register_tools(assistant, user, ctx)

    registered = cast(Any, assistant.llm_config)["tools"]
    assert [tool["function"]["name"] for tool in registered] == [spec.name for spec in TOOLS]
    for tool, spec in zip(registered, TOOLS, strict=True):
        assert tool == {"type": "function", "function": {"name": spec.name, "description": spec.description,
                                                         "parameters": spec.args.model_json_schema()}}
    assert registered == tool_schemas()
    assert set(user.function_map) == ALL_TOOLS and "tools" not in (user.llm_config or {})

    # the same names, descriptions and argument schemas as the LangChain and MCP front ends
    by_name = {tool["function"]["name"]: tool["function"] for tool in registered}
    for lc in langchain_tools(ctx):
        assert by_name[lc.name]["description"] == lc.description
        assert by_name[lc.name]["parameters"] == cast(Any, lc.args_schema).model_json_schema()
    for mcp_tool in await build_mcp(lambda: ctx).list_tools():
        ours = by_name[mcp_tool.name]
        assert mcp_tool.description == ours["description"]
        assert mcp_tool.inputSchema["properties"] == ours["parameters"]["properties"]
        assert mcp_tool.inputSchema.get("required", []) == ours["parameters"].get("required", [])

    only = AssistantAgent("only", llm_config=ollama_llm_config(settings))
    register_tools(only, user, ctx, names=["search_images"])
    assert [tool["function"]["name"] for tool in cast(Any, only.llm_config)["tools"]] == ["search_images"]
    with pytest.raises(AtelierError, match="no tool named draw"):
        register_tools(only, user, ctx, names=["draw"])


async def test_registering_off_the_loop_is_a_clear_error(settings: Settings) -> None:
    ctx = ToolContext(settings=settings, ledger=cast(Any, None), owner="ana")
    assistant, user = _pair(settings)
    with pytest.raises(AtelierError, match="event loop that opened the ToolContext"):
        await asyncio.to_thread(register_tools, assistant, user, ctx)  # a thread with no running loop


async def test_the_llm_config_is_ollama_openai_compatible_endpoint(settings: Settings) -> None:
    config = ollama_llm_config(settings)
    entry = config["config_list"][0]
    assert entry["base_url"] == f"{settings.ollama_url}/v1" and entry["model"] == MODEL
    assert entry["api_type"] == "openai" and entry["api_key"] and config["cache_seed"] is None
    assert ollama_llm_config(settings) is not config  # a fresh dict for each agent


# --- (b) one assistant calls generate_image ----------------------------------------------------------------------


async def test_the_assistant_makes_the_user_proxy_run_generate_image(
    services: ChatServices, settings: Settings, fake_ollama: FakeOllama, loopback_only: list[str]
) -> None:
    fake_ollama.script(MODEL, [
        tool_call("generate_image", prompt="a paper crane on a desk", seed=11, steps=6),
        tool_call("generate_image", prompt="x", steps=0),  # invalid: the model reads which field and why
        tool_call("job_status", job_id="ffffffff"),  # an AtelierError: the model reads its message
        "The crane is drawn. TERMINATE",
    ])
    assistant, user = _pair(settings)
    log = register_tools(assistant, user, tool_context(services, "ana"))
    started = time.perf_counter()
    result = await user.a_initiate_chat(assistant, message="Draw a paper crane.", silent=True)
    assert time.perf_counter() - started < 30
    assert result.chat_history[-1]["content"] == "The crane is drawn. TERMINATE"

    first, second, third = log.calls
    done = first.result
    assert first.ok and isinstance(done, JobInfo) and done.status == "succeeded" and done.seed == 11
    png = Path(str(done.images[0].path))
    assert png.is_file() and png.read_bytes().startswith(b"\x89PNG") and log.images == [png]
    assert (await services.ledger.get(done.job_id)).owner == "ana" and log.job_ids == [done.job_id]
    assert not second.ok and second.text.startswith("Error: invalid arguments for generate_image: steps:")
    assert not third.ok and third.text.startswith("Error: no job") and "ffffffff" in third.text

    chats = openai_chats(fake_ollama)
    assert len(chats) == 4 and all(body["model"] == MODEL for body in chats)
    assert all(body["tools"] == tool_schemas() for body in chats)  # exactly our specs, on every request
    assert json.loads(_tool_messages(chats[1])[0])["images"][0]["path"] == str(png)
    assert "greater than or equal to 1" in _tool_messages(chats[2])[-1]
    assert _tool_messages(chats[3])[-1] == third.text
    assert {path for _, path, _ in fake_ollama.requests} <= {"/v1/chat/completions", "/api/embed", "/api/ps"}


async def test_a_sync_chat_in_a_thread_runs_the_tools_on_the_studio_loop(
    services: ChatServices, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(MODEL, [tool_call("generate_image", prompt="a kite", seed=3, steps=2), "Kite drawn. TERMINATE"])
    assistant, user = _pair(settings)
    log = register_tools(assistant, user, tool_context(services, "ana"))
    await asyncio.to_thread(user.initiate_chat, assistant, message="Draw a kite.", silent=True)
    (call,) = log.calls
    assert call.ok and isinstance(call.result, JobInfo) and call.result.status == "succeeded"


async def test_an_async_chat_on_another_loop_hands_the_tools_to_the_studio_loop(
    services: ChatServices, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(MODEL, [tool_call("submit_job", prompt="a boat", seed=4), "Queued. TERMINATE"])
    assistant, user = _pair(settings)
    log = register_tools(assistant, user, tool_context(services, "ana"))

    def elsewhere() -> None:
        asyncio.run(user.a_initiate_chat(assistant, message="Queue a boat.", silent=True))

    await asyncio.to_thread(elsewhere)
    (call,) = log.calls
    assert call.ok and isinstance(call.result, JobInfo)
    assert [str(job.id) for job in await services.ledger.list_jobs(owner="ana")] == [call.result.job_id]


async def test_a_sync_chat_that_blocks_the_studio_loop_gets_an_error_not_a_deadlock(
    services: ChatServices, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(MODEL, [tool_call("generate_image", prompt="a kite"), "I could not draw it. TERMINATE"])
    assistant, user = _pair(settings)
    log = register_tools(assistant, user, tool_context(services, "ana"))
    user.initiate_chat(assistant, message="Draw a kite.", silent=True)  # on this loop's thread: blocks it
    assert log.calls == []
    refusal = _tool_messages(openai_chats(fake_ollama)[1])[0]
    assert refusal.startswith("Error: the tool cannot run") and "a_initiate_chat" in refusal
    assert await services.ledger.list_jobs(owner="ana") == []


# --- (c) the designer and the critic -----------------------------------------------------------------------------


async def test_the_designer_and_critic_review_with_one_revision(
    services: ChatServices, settings: Settings, fake_ollama: FakeOllama, loopback_only: list[str]
) -> None:
    fake_ollama.script(MODEL, [
        tool_call("generate_image", prompt="a lighthouse poster, cold dawn", seed=21, steps=4),  # designer
        "Job ready: a lighthouse at a cold dawn, as the brief asks.",                          # designer presents
        tool_call("search_images", query="lighthouse poster", k=3),                                # critic compares
        "REVISE: warmer light, the brief says welcoming.",                                     # critic
        tool_call("generate_image", prompt="a lighthouse poster, warm sunset", seed=22, steps=4),  # designer revises
        "Revised: the same lighthouse at a warm sunset.",                                      # designer presents
        "APPROVED: warm, welcoming and on brief.",                                             # critic
    ])
    ctx = tool_context(services, "ana")
    review = await run_design_review(ctx, settings, "A welcoming poster of our harbour's lighthouse.")

    assert review.approved and review.summary == "APPROVED: warm, welcoming and on brief."
    assert [call.name for call in review.tool_calls] == ["generate_image", "search_images", "generate_image"]
    assert all(call.ok for call in review.tool_calls)
    assert isinstance(review.tool_calls[1].result, list)
    jobs = [await services.ledger.get(job) for job in review.job_ids]
    assert [job.params["seed"] for job in jobs] == [21, 22] and all(job.status == "succeeded" for job in jobs)
    assert len(review.images) == 2 and all(path.read_bytes().startswith(b"\x89PNG") for path in review.images)
    turns = review.transcript
    assert [turn.speaker for turn in turns] == ["critic", "designer"] * 5 + ["critic"]
    assert turns[0].text.startswith("A welcoming poster") and turns[-1].text == review.summary
    assert [(turn.speaker, call["name"], call["arguments"].get("seed")) for turn in turns
            for call in turn.tool_calls] == [("designer", "generate_image", 21), ("critic", "search_images", None),
                                             ("designer", "generate_image", 22)]

    chats = openai_chats(fake_ollama)
    assert len(chats) == 7
    # the designer is offered generate_image only, the critic search_images only
    assert [_offered(body) for body in chats] == [{"generate_image"}] * 2 + [{"search_images"}] * 2 + \
        [{"generate_image"}] * 2 + [{"search_images"}]
    assert json.loads(_tool_messages(chats[1])[0])["job_id"] == review.job_ids[0]
    assert "warmer light" in json.dumps(chats[4]["messages"])


async def test_a_second_revision_ends_the_review_unapproved(
    services: ChatServices, settings: Settings, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(MODEL, [
        tool_call("generate_image", prompt="a mug, studio light", seed=31, steps=2),
        "Presented: a mug in studio light.",
        "REVISE: more contrast.",
        tool_call("generate_image", prompt="a mug, hard studio light", seed=32, steps=2),
        "Revised: harder light.",
        "REVISE: still too flat.",  # beyond the one revision allowed: the designer stops here
        "never asked for",
    ])
    review = await run_design_review(tool_context(services, "ana"), settings, "A mug for the shop.")
    assert not review.approved and review.summary == "REVISE: still too flat."
    assert [call.name for call in review.tool_calls] == ["generate_image", "generate_image"]
    assert len(review.job_ids) == 2 and len(openai_chats(fake_ollama)) == 6


async def test_the_pair_is_built_ready(services: ChatServices, settings: Settings) -> None:
    log = ToolLog()
    designer, critic = design_pair(tool_context(services, "ana"), settings, log=log)
    assert [t["function"]["name"] for t in cast(Any, designer.llm_config)["tools"]] == ["generate_image"]
    assert [t["function"]["name"] for t in cast(Any, critic.llm_config)["tools"]] == ["search_images"]
    assert set(critic.function_map) == {"generate_image"} and set(designer.function_map) == {"search_images"}
    assert designer._code_execution_config is False and critic._code_execution_config is False


# --- (d) Ollama down -----------------------------------------------------------------------------------------


async def test_ollama_down_gives_our_clear_error(
    services: ChatServices, settings: Settings, closed_port_url: str, loopback_only: list[str]
) -> None:
    down = settings.model_copy(update={"ollama_url": closed_port_url})
    started = time.perf_counter()
    with pytest.raises(LLMUnavailableError) as caught:
        await run_design_review(tool_context(services, "ana"), down, "anything")
    assert time.perf_counter() - started < 20
    message = str(caught.value)
    assert closed_port_url in message and "ollama serve" in message and "OpenAI" not in message
    assert await services.ledger.list_jobs(owner="ana") == []


async def test_a_model_not_pulled_gives_our_clear_error(services: ChatServices, settings: Settings) -> None:
    missing = settings.model_copy(update={"chat_model": "no-such-model"})
    with pytest.raises(LLMUnavailableError, match=r"ollama pull no-such-model"):
        await run_design_review(tool_context(services, "ana"), missing, "anything")
