"""One explanation of "Ollama cannot answer": every client's errors read the same through every front end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.outputs import ChatResult
from ollama import ResponseError

from atelier.adapters.autogen import ollama_errors
from atelier.adapters.crewai import build_llm, explain_llm_error
from atelier.agents.llm import LLMUnavailableError, Meter, call_llm
from atelier.tools.doctor import check_ollama
from atelier.tools.service_errors import (
    START_HINTS,
    explain_ollama_error,
    model_not_pulled,
    ollama_timed_out,
    ollama_unreachable,
    start_hint,
)
from atelier.tools.settings import Settings, load_settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:crewai")

URL = "http://10.0.0.7:11434"
MODEL = "llama3.2"
REQUEST = httpx.Request("POST", f"{URL}/v1/chat/completions")
NOT_FOUND = f'model "{MODEL}" not found, try pulling it first'


def _caused(error: BaseException, cause: BaseException) -> BaseException:
    """`error` raised from `cause` (as CrewAI wraps the OpenAI client's errors)."""
    error.__cause__ = cause
    return error


# What each client raises for each problem: langchain-ollama (the `ollama` library over httpx) for the agents,
# the OpenAI client for ag2, and CrewAI's own wrapping of the OpenAI client's errors.
FAILURES: dict[str, list[BaseException]] = {
    "down": [
        httpx.ConnectError("All connection attempts failed"),
        ConnectionError("Failed to connect to Ollama. Please check that Ollama is downloaded, running and accessible."),
        openai.APIConnectionError(request=REQUEST),
        _caused(ConnectionError("Failed to connect to OpenAI API: Connection error."),
                openai.APIConnectionError(request=REQUEST)),
    ],
    "missing": [
        ResponseError(NOT_FOUND, 404),
        openai.NotFoundError(f"Error code: 404 - {{'error': {{'message': '{NOT_FOUND}'}}}}",
                             response=httpx.Response(404, request=REQUEST), body=None),
        ValueError(f"Model {MODEL} not found: Error code: 404"),
    ],
    "slow": [
        httpx.ReadTimeout("timed out"),
        openai.APITimeoutError(request=REQUEST),
        _caused(RuntimeError("the crew failed"), openai.APITimeoutError(request=REQUEST)),
        TimeoutError(),
    ],
}
EXPECTED = {"down": ollama_unreachable(URL), "missing": model_not_pulled(MODEL, URL),
            "slow": ollama_timed_out(MODEL, URL)}


class _Failing(BaseChatModel):
    """A chat model whose every call raises the given error (as ChatOllama would)."""

    error: Any
    model: str = MODEL
    base_url: str = URL

    @property
    def _llm_type(self) -> str:
        """LangChain's type tag."""
        return "failing"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        """Raise."""
        raise self.error


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Ollama at URL with MODEL as the chat model."""
    return load_settings(data_dir=tmp_path, ollama_url=URL, chat_model=MODEL)


async def _through_every_front_end(error: BaseException, settings: Settings) -> list[str]:
    """The message the agents, CrewAI and AutoGen give for one client error."""
    with pytest.raises(LLMUnavailableError) as agents:
        await call_llm(_Failing(error=error), [HumanMessage("hi")], Meter("answer"))
    crew = explain_llm_error(error, build_llm(settings))
    assert crew is not None, repr(error)
    with pytest.raises(LLMUnavailableError) as autogen, ollama_errors(settings):
        raise error
    return [str(agents.value), str(crew), str(autogen.value)]


@pytest.mark.asyncio
@pytest.mark.parametrize(("problem", "error"), [(p, e) for p, errors in FAILURES.items() for e in errors],
                         ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value)
async def test_every_clients_error_reads_the_same_through_every_front_end(problem: str, error: BaseException,
                                                                          settings: Settings) -> None:
    assert await _through_every_front_end(error, settings) == [EXPECTED[problem]] * 3


def test_each_message_names_the_url_and_the_fix() -> None:
    down, missing, slow = EXPECTED["down"], EXPECTED["missing"], EXPECTED["slow"]
    assert down == f"Ollama at {URL} is unreachable: start it (`ollama serve`) or fix OLLAMA_URL"
    assert f"`ollama pull {MODEL}`" in missing and "ATELIER_CHAT_MODEL" in missing and URL in missing
    assert URL in slow and "`ollama serve`" in slow and "OLLAMA_URL" in slow and MODEL in slow
    assert all("OpenAI" not in message for message in EXPECTED.values())
    # the OpenAI-compatible endpoint's `/v1` is not Ollama's URL; no URL at all is Ollama's default
    assert explain_ollama_error(httpx.ConnectError("x"), url=f"{URL}/v1/", model=None) is not None
    assert str(explain_ollama_error(httpx.ConnectError("x"), url=f"{URL}/v1/", model=None)) == down
    assert "http://localhost:11434" in ollama_unreachable(None)


@pytest.mark.asyncio
async def test_other_errors_are_not_disguised(settings: Settings) -> None:
    for error in (ValueError("bad"), RuntimeError("a bug"), openai.BadRequestError(
            "Error code: 400", response=httpx.Response(400, request=REQUEST), body=None)):
        assert explain_ollama_error(error, url=URL, model=MODEL) is None
        assert explain_llm_error(error, build_llm(settings)) is None
        with pytest.raises(type(error)), ollama_errors(settings):
            raise error
        with pytest.raises(type(error)):
            await call_llm(_Failing(error=error), [HumanMessage("hi")], Meter("answer"))


@pytest.mark.asyncio
async def test_the_start_hints_are_the_doctors_and_the_pages(closed_port_url: str) -> None:
    check = await check_ollama(closed_port_url, required=True, timeout=2)
    assert not check.ok and check.hint == "unreachable (ConnectError); start it (`ollama serve`) or fix OLLAMA_URL"
    assert start_hint("Ollama", model="qwen3") == START_HINTS["Ollama"].format(model="qwen3")
    assert "`ollama pull qwen3`" in str(start_hint("Ollama", model="qwen3"))
    assert "COMFYUI_URLS" in str(start_hint("ComfyUI", model="qwen3")) and start_hint("Qdrant", model="x") is None
