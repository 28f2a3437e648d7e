"""LLM calls per request: Atelier's supervisor beside langgraph-supervisor's create_supervisor, same fake model.

30 fixed requests (10 plain questions, 7 "show me" illustrations, 7 questions about the user's documents,
6 product showcases) run through:
- Atelier's supervisor (rules route; agents call the model only when they must);
- `langgraph_supervisor.create_supervisor` wired to the same four agents as ReAct agents with their
  tools (search documents, queue images), the way its README builds a team: the supervisor model hands
  off with tool calls, agents call tools, control returns to the supervisor, which writes the answer.
Both use one fake chat model that answers every call the same deterministic way (it follows the
handoffs and tool calls a capable model would make) and counts calls and prompt tokens (words).
The table is per category. Atelier's targets: exactly 1 call for a plain question, and 1 for an illustrated
answer — the answer and its picture's description come from the same call (agents/illustrated_answer.py); the
line under the table counts the illustrated answers whose picture was described in that call.
The create_supervisor side needs the bench extra (pip install -e '.[bench]'); without it the bench says so and
prints Atelier's side alone.
Run: .venv/bin/python bench/llm_calls.py [--per-category 10] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import tool
from pydantic import Field

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier.agents.prompts import ILLUSTRATED_ANSWER_SYSTEM, INTENT_SYSTEM, PLANNER_SYSTEM
from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.supervisor import build_supervisor
from atelier.tools.settings import load_settings
from bench.smoke import missing, parse_args, skipped_line

REQUESTS: dict[str, list[str]] = {
    "plain question": [
        "What is the capital of Portugal?", "Explain what a seed does in image generation.",
        "Why is the sky blue?", "What does CFG scale mean?", "Summarise the plot of Hamlet in two lines.",
        "What is a good name for a coffee brand?", "How many legs does a spider have?",
        "What is the difference between SD 1.5 and SDXL?", "Translate 'good morning' into Portuguese.",
        "What time zone is Lisbon in?",
    ],
    "illustrate": [
        "Show me what a cyberpunk cafe looks like", "What does a bioluminescent forest look like?",
        "Show me a cozy reading nook", "Let me see a futuristic bicycle", "Show me a desert city at night",
        "What does a glass greenhouse on Mars look like?", "Show me an origami dragon",
    ],
    "retrieve": [
        "According to our brand guide, what background do we use?", "In our docs, how do we run ComfyUI on 4 GB?",
        "According to the notes, how often do I feed the starter?", "In the guide, where does the logo go?",
        "According to our docs, how do I free GPU memory?", "In our notes, when should a chain be replaced?",
        "According to the brand guide, which colours do we use?",
    ],
    "showcase": [f"Plan a product showcase for our {p}: hero, lifestyle, detail and thumbnail" for p in
                 ("copper cup", "walnut tray", "linen apron", "ceramic kettle", "cork coaster", "oak grinder")],
}
SHOWCASE = {"briefs": [{"purpose": p, "subject": "the product", "notes": ""}
                       for p in ("hero", "lifestyle", "detail", "thumbnail")]}
SMOKE = {"per_category": 1}
AGENT_FOR = {"plain question": "answerer", "illustrate": "visual_designer", "retrieve": "rag_retriever",
             "showcase": "planner"}


class CountingModel(BaseChatModel):
    """One deterministic 'capable model' for both systems; counts calls and prompt words per category."""

    current: dict[str, str] = Field(default_factory=lambda: {"category": "plain question"})
    tools: list[str] = Field(default_factory=list)
    calls: dict[str, int] = Field(default_factory=lambda: defaultdict(int))
    tokens: dict[str, int] = Field(default_factory=lambda: defaultdict(int))
    described: list[int] = Field(default_factory=lambda: [0])  # Atelier's illustrated answers whose picture it used

    @property
    def _llm_type(self) -> str:
        """LangChain's type tag."""
        return "counting"

    def _count(self, messages: Sequence[BaseMessage]) -> None:
        """Record one call."""
        self.calls[self.current['category']] += 1
        self.tokens[self.current['category']] += sum(len(str(m.content).split()) for m in messages)

    def _reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        """What a capable model answers here (hand off, call a tool, or write the answer)."""
        results = [m for m in messages if isinstance(m, ToolMessage)]
        done = " ".join(str(m.content) for m in results)
        handoffs = [t for t in self.tools if t.startswith("transfer_to_")]
        if handoffs:  # the supervisor
            agent = AGENT_FOR[self.current['category']]
            if f"transferred to {agent}" not in done:
                return _call(f"transfer_to_{agent}", {})
            if self.current['category'] == "showcase" and "transferred to visual_designer" not in done:
                return _call("transfer_to_visual_designer", {})
            return AIMessage("Here is the result.")
        own = [t for t in self.tools if not t.startswith("transfer_")]
        if own and not any(m.name in own for m in results if m.name):
            return _call(own[0], {"query": "the request"})
        if messages and messages[0].content == ILLUSTRATED_ANSWER_SYSTEM:  # Atelier: the answer and its picture
            return AIMessage("Here is the answer.\n\n[picture]\nsubject: the scene the answer describes\n"
                             "setting: where it takes place\nmood: calm, soft light\n[/picture]")
        return AIMessage("Done.")

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        """Count and answer."""
        self._count(messages)
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[Any, Any]:
        """The same counters, knowing which tools this caller offers."""
        names = [getattr(t, "name", None) or getattr(t, "__name__", str(t)) for t in tools]
        bound = self.model_copy(update={"tools": names})
        bound.calls, bound.tokens, bound.current = self.calls, self.tokens, self.current  # shared counters
        return bound

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any) -> Runnable[Any, Any]:
        """Atelier's structured calls: the intent or the showcase briefs."""

        def run(messages: Any) -> Any:
            self._count(messages)
            system = str(messages[0].content) if messages else ""
            value = SHOWCASE if system == PLANNER_SYSTEM else {"intent": "answer"} if system == INTENT_SYSTEM else {}
            parsed = schema.model_validate(value)
            raw = AIMessage(json.dumps(value))
            return {"raw": raw, "parsed": parsed, "parsing_error": None} if include_raw else parsed

        return RunnableLambda(run)


def _call(name: str, args: dict[str, Any]) -> AIMessage:
    """An AI message that calls one tool."""
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call_{name}", "type": "tool_call"}])


async def run_atelier(model: CountingModel, requests: dict[str, list[str]]) -> None:
    """Every request through Atelier's supervisor (with the test corpus in its memory, so retrieval answers)."""
    from atelier.tools.memory.backends import open_memory
    from atelier.tools.memory.documents import chunk_file, find_documents

    async def vram() -> float:
        return 24.0

    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(data_dir=Path(folder), approval_cost=100, approval_gpu_seconds=10_000)
        memory = open_memory(settings)
        corpus = Path(__file__).resolve().parents[1] / "tests" / "data" / "corpus"
        for path in find_documents([corpus]):
            memory.add_documents(chunk_file(path, "shared"))
        deps = SupervisorDeps(settings=settings, llm=model, vram_probe=vram, memory=memory)
        graph = build_supervisor(deps=deps).compile()
        for category, texts in requests.items():
            model.current["category"] = category
            for text in texts:
                out = await graph.ainvoke({"messages": [HumanMessage(text)], "mode": "auto"})
                if category == "illustrate":
                    pictures = [design["brief"].get("picture") for design in out.get("briefs", [])]
                    model.described[0] += any(p and p["subject"] == "the scene the answer describes" for p in pictures)
        memory.close()


async def run_baseline(model: CountingModel, requests: dict[str, list[str]]) -> None:
    """Every request through create_supervisor with four ReAct agents."""
    import warnings

    from langgraph.prebuilt import create_react_agent  # what langgraph-supervisor's README builds agents with
    from langgraph_supervisor import create_supervisor

    warnings.filterwarnings("ignore", message=".*create_react_agent has been moved.*")

    @tool
    def search_documents(query: str) -> str:
        """Find passages in the user's documents."""
        return "[1] Brand guide: dark walnut table, warm amber light."

    @tool
    def queue_image(query: str) -> str:
        """Queue an image in the job ledger."""
        return "queued job 1234"

    agents: list[Any] = [
        create_react_agent(model, tools=[], name="answerer", prompt="Answer the user's question."),
        create_react_agent(model, tools=[search_documents], name="rag_retriever", prompt="Answer from documents."),
        create_react_agent(model, tools=[queue_image], name="visual_designer", prompt="Write prompts, queue images."),
        create_react_agent(model, tools=[], name="planner", prompt="Plan image briefs."),
    ]
    team = create_supervisor(agents, model=model, prompt="You manage a creative team. Hand each request to the "
                             "right agent, then answer the user.").compile()
    for category, texts in requests.items():
        model.current["category"] = category
        for text in texts:
            await team.ainvoke({"messages": [HumanMessage(text)]})


def main() -> None:
    """Run both and print calls and tokens per category, with the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--per-category", type=int, default=max(map(len, REQUESTS.values())),
                        help="requests per category at most (the first ones of each)")
    args = parse_args(parser, SMOKE)
    requests = {category: texts[:args.per_category] for category, texts in REQUESTS.items()}
    ours, theirs = CountingModel(), CountingModel()
    asyncio.run(run_atelier(ours, requests))
    illustrated = len(requests.get("illustrate", []))
    described = (f"illustrate: {ours.described[0]} of {illustrated} pictures described by the answer's own call "
                 f"({ours.calls['illustrate'] / illustrated if illustrated else 0:.2f} calls per illustrated answer)")
    if missing("langgraph_supervisor"):
        print(skipped_line("the comparison with langgraph-supervisor's create_supervisor", "langgraph-supervisor"))
        print(f"{'category':<16}{'n':>3}  {'atelier calls/req':>18}{'tokens/req':>12}")
        for category, texts in requests.items():
            n = len(texts)
            print(f"{category:<16}{n:>3}  {ours.calls[category] / n:>18.2f}{ours.tokens[category] / n:>12.0f}")
        print(described)
        return
    asyncio.run(run_baseline(theirs, requests))
    print(f"{'category':<16}{'n':>3}  {'atelier calls/req':>18}{'tokens/req':>12}  "
          f"{'create_supervisor calls/req':>28}{'tokens/req':>12}  {'ratio':>6}")
    for category, texts in requests.items():
        n = len(texts)
        a_calls, b_calls = ours.calls[category] / n, theirs.calls[category] / n
        print(f"{category:<16}{n:>3}  {a_calls:>18.2f}{ours.tokens[category] / n:>12.0f}  {b_calls:>28.2f}"
              f"{theirs.tokens[category] / n:>12.0f}  {b_calls / a_calls if a_calls else float('inf'):>5.1f}x")
    total_a, total_b = sum(ours.calls.values()), sum(theirs.calls.values())
    print(f"{'all':<16}{sum(map(len, requests.values())):>3}  {total_a:>18}{'':>12}  {total_b:>28}{'':>12}  "
          f"{total_b / total_a:>5.1f}x fewer calls; target: fewer on every category, exactly 1 for a plain question "
          "and for an illustrated answer")
    print(described)


if __name__ == "__main__":
    main()
