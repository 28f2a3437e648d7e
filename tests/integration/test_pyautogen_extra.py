"""The `autogen-agentchat` extra (what pyautogen 0.10 installs) in its own virtual environment, on our tool schema.

autogen-core 0.7 pins protobuf~=5.29 while langgraph-api needs protobuf 6, so Microsoft's AutoGen cannot live in the
project's environment. This test builds a separate one from the configured registry, and there an `autogen_agentchat`
AssistantAgent (OpenAIChatCompletionClient on the fake Ollama's /v1) calls a tool whose parameters are exactly
Atelier's JSON schema for generate_image; the tool only echoes (that venv has no Atelier).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.ollama_server import FakeOllama

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REQUIREMENTS = ["autogen-agentchat>=0.7,<0.8", "autogen-ext[openai]>=0.7,<0.8"]
MISSING = ("No matching distribution found", "Could not find a version that satisfies")

SCRIPT = '''
"""An autogen_agentchat AssistantAgent calls one tool built from a JSON schema; prints what happened as JSON."""
import asyncio, importlib.metadata, ipaddress, json, socket, sys

refused = []
_connect = socket.socket.connect


def _loopback_only(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(address[0]).is_loopback:
        refused.append(str(address[0]))
        raise ConnectionRefusedError(address[0])
    return _connect(sock, address)


socket.socket.connect = _loopback_only

from autogen_agentchat.agents import AssistantAgent
from autogen_core import CancellationToken
from autogen_core.tools import BaseTool, ToolSchema
from autogen_ext.models.openai import OpenAIChatCompletionClient
from pydantic import BaseModel, ConfigDict


class Args(BaseModel):
    model_config = ConfigDict(extra="allow")


class Echo(BaseModel):
    tool: str
    arguments: dict


class SchemaTool(BaseTool[Args, Echo]):
    """A tool whose parameters are exactly the given JSON schema; it answers with an echo of its call."""

    def __init__(self, spec):
        super().__init__(Args, Echo, spec["name"], spec["description"])
        self._parameters = spec["parameters"]

    @property
    def schema(self) -> ToolSchema:
        return {"name": self.name, "description": self.description, "parameters": self._parameters}

    async def run(self, args: Args, cancellation_token: CancellationToken) -> Echo:
        return Echo(tool=self.name, arguments=args.model_dump())


async def main(url, spec_path, model):
    with open(spec_path) as f:
        spec = json.load(f)
    client = OpenAIChatCompletionClient(
        model=model, base_url=url + "/v1", api_key="ollama",
        model_info={"vision": False, "function_calling": True, "json_output": False, "family": "unknown",
                    "structured_output": False})
    agent = AssistantAgent("designer", model_client=client, tools=[SchemaTool(spec)], reflect_on_tool_use=True)
    result = await agent.run(task="Draw a paper crane.")
    await client.close()
    messages = [{"type": type(m).__name__, "content": m.model_dump(mode="json").get("content")}
                for m in result.messages]
    versions = {name: importlib.metadata.version(name) for name in ("autogen-agentchat", "autogen-core", "protobuf")}
    print(json.dumps({"messages": messages, "refused": refused, "versions": versions}))


asyncio.run(main(*sys.argv[1:4]))
'''


def _generate_image_schema() -> dict[str, Any]:
    """generate_image as AutoGen is offered it (name, description, parameters = the args model's JSON schema)."""
    from atelier.tools.toolkit import TOOLS

    spec = next(spec for spec in TOOLS if spec.name == "generate_image")
    return {"name": spec.name, "description": spec.description, "parameters": spec.args.model_json_schema()}


@pytest.fixture(scope="module")
def agentchat_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with autogen-agentchat and autogen-ext[openai] from the configured registry."""
    venv = tmp_path_factory.mktemp("agentchat") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    started = time.perf_counter()
    installed = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--retries", "1",
                                "--timeout", "60", *REQUIREMENTS], capture_output=True, text=True, timeout=780)
    seconds = time.perf_counter() - started
    if installed.returncode != 0:
        output = installed.stdout + installed.stderr
        if any(sign in output for sign in MISSING):
            pytest.skip(f"the package registry has no {' / '.join(REQUIREMENTS)}: {output.strip().splitlines()[-1]}")
        raise AssertionError(f"pip install failed after {seconds:.0f} s:\n{output[-4000:]}")
    print(f"autogen-agentchat venv installed in {seconds:.1f} s")
    return python


def test_an_agentchat_assistant_calls_a_tool_built_from_our_schema(
    agentchat_python: Path, fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    spec = _generate_image_schema()
    (tmp_path / "tool.json").write_text(json.dumps(spec))
    (tmp_path / "agent.py").write_text(SCRIPT)
    arguments = {"prompt": "a paper crane on a desk", "seed": 11, "steps": 6}
    fake_ollama.script("llama3.2", [{"tool_calls": [{"function": {"name": "generate_image", "arguments": arguments}}]},
                                    "Here is your paper crane."])
    ran = subprocess.run([str(agentchat_python), str(tmp_path / "agent.py"), fake_ollama.url,
                          str(tmp_path / "tool.json"), "llama3.2"], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-4000:]
    report = json.loads(ran.stdout.strip().splitlines()[-1])

    kinds = [m["type"] for m in report["messages"]]
    assert kinds == ["TextMessage", "ToolCallRequestEvent", "ToolCallExecutionEvent", "TextMessage"], kinds
    (request,) = report["messages"][1]["content"]
    assert request["name"] == "generate_image" and json.loads(request["arguments"]) == arguments
    (executed,) = report["messages"][2]["content"]
    assert not executed["is_error"] and json.loads(executed["content"]) == {"tool": "generate_image",
                                                                             "arguments": arguments}
    assert report["messages"][3]["content"] == "Here is your paper crane."
    assert report["refused"] == [] and report["versions"]["autogen-agentchat"].startswith("0.7.")

    chats = [body for method, path, body in fake_ollama.requests if path == "/v1/chat/completions"]
    assert len(chats) == 2 and chats[0]["model"] == "llama3.2"
    (offered,) = chats[0]["tools"]
    assert offered["type"] == "function"
    assert {key: offered["function"][key] for key in ("name", "description", "parameters")} == spec
    tool_results = [m for m in chats[1]["messages"] if m.get("role") == "tool"]
    assert json.loads(tool_results[0]["content"])["arguments"] == arguments
