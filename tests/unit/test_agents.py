"""Agents without services: LLM failure messages, the cost/VRAM router, the visual designer, routing rules."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import ChatResult

from atelier.agents.cost_router import choose_route
from atelier.agents.llm import LLMUnavailableError, Meter, call_llm
from atelier.agents.planner import Brief
from atelier.agents.visual_designer import BASE_NEGATIVE, design_image
from atelier.graphs.routing import classify
from atelier.tools.errors import WorkflowError
from atelier.tools.memory.style import StyleProfile


class _Failing(BaseChatModel):
    """A chat model whose every call raises the given error (as ChatOllama would)."""

    error: Any
    model: str = "llama3.2"
    base_url: str = "http://127.0.0.1:11434"

    @property
    def _llm_type(self) -> str:
        """LangChain's type tag."""
        return "failing"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        """Raise."""
        raise self.error


@pytest.mark.asyncio
async def test_a_model_that_is_not_pulled_is_named_with_the_pull_command() -> None:
    from ollama import ResponseError

    llm = _Failing(error=ResponseError('model "llama3.2" not found, try pulling it first', 404))
    with pytest.raises(LLMUnavailableError, match=r"ollama pull llama3.2"):
        await call_llm(llm, [HumanMessage("hi")], Meter("answer"))


@pytest.mark.asyncio
async def test_ollama_down_names_the_url_and_the_fix() -> None:
    llm = _Failing(error=httpx.ConnectError("All connection attempts failed"))
    with pytest.raises(LLMUnavailableError, match=r"http://127.0.0.1:11434 is unreachable.*ollama serve"):
        await call_llm(llm, [HumanMessage("hi")], Meter("answer"))


@pytest.mark.asyncio
async def test_other_errors_are_not_disguised() -> None:
    with pytest.raises(ValueError, match="bad"):
        await call_llm(_Failing(error=ValueError("bad")), [HumanMessage("hi")], Meter("answer"))


def test_the_router_follows_purpose_vram_urgency_and_budget() -> None:
    assert choose_route("hero", vram_free_gb=24).workflow == "txt2img-hq"
    assert choose_route("hero", vram_free_gb=5).workflow == "txt2img", "the 8 GB workflow does not fit in 5 GB"
    assert choose_route("thumbnail", urgency="immediate", vram_free_gb=24).workflow == "txt2img-turbo"
    cheap = choose_route("hero", vram_free_gb=24, budget=0.003)
    assert cheap.workflow == "txt2img-turbo" and "budget of 0.003" in cheap.reason
    with pytest.raises(WorkflowError, match=r"no workflow costs 0\.0001"):
        choose_route("hero", budget=0.0001)
    with pytest.raises(WorkflowError):
        choose_route("hero", vram_free_gb=1)


def test_the_designer_adds_the_purpose_look_and_the_persons_style() -> None:
    route = choose_route("lifestyle", vram_free_gb=24)
    assert route.workflow == "txt2img-hq", "SDXL: the prompt is weighted tags"
    style = StyleProfile(owner="ana", rated=3, liked_modifiers=[("watercolor", 4.5), ("soft light", 3.5)],
                         disliked_modifiers=[("neon", 1.5)])
    design = design_image(Brief(purpose="lifestyle", subject="a copper cup", notes="morning cafe"), route, style)
    prompt = design.params.prompt
    assert prompt.startswith("(copper cup:1.2), morning cafe, lifestyle scene")
    assert prompt.endswith("watercolor, soft light")
    assert design.params.negative == f"{BASE_NEGATIVE}, neon"
    assert (design.params.width, design.params.height) == (1024, 768)
    request = design.job_request("ana", "k-1")
    assert request.workflow == route.workflow and request.idempotency_key == "k-1" and request.owner == "ana"


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("hi there", "answer"),
        ("Please generate a poster of a whale", "generate"),
        ("Could you render a logo for my bakery?", "generate"),
        ("visualise a floating island", "illustrate"),
        ("search my earlier images of cats", "images"),  # earlier images are their own intent now
        ("Which workflow fits in 6 GB of VRAM?", "cost"),
        ("we need a shot list for the new kettle", "plan"),
        ("a fox in the snow, watercolor", "generate"),  # a bare prompt is a request for that image
    ],
)
def test_routing_rules(text: str, intent: str) -> None:
    assert classify(text) == intent
