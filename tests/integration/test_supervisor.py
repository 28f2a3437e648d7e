"""The supervisor graph with a scripted chat model: whole message sequences per intent, approval, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.routing import classify
from atelier.graphs.supervisor import build_supervisor
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from tests.fakes.chat_model import ScriptedChatModel, StreamingScriptedChatModel

pytestmark = pytest.mark.asyncio

SHOWCASE = {"briefs": [
    {"purpose": "hero", "subject": "a copper espresso cup", "notes": "dark walnut table"},
    {"purpose": "lifestyle", "subject": "a copper espresso cup in a cafe", "notes": "morning light"},
    {"purpose": "detail", "subject": "the rim of a copper espresso cup", "notes": ""},
    {"purpose": "thumbnail", "subject": "a copper espresso cup", "notes": ""},
]}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Thresholds low enough that a four-image plan needs approval but one image does not."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls="http://127.0.0.1:9", approval_cost=0.02,
                         approval_gpu_seconds=60)


@pytest_asyncio.fixture
async def ledger(machine_pg_url: str, settings: Settings) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database."""
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "out")) as svc:
        yield svc


def make_graph(settings: Settings, llm: ScriptedChatModel, ledger: LedgerService | None = None) -> Any:
    """The compiled supervisor with an in-memory checkpointer and 24 GB of free VRAM."""

    async def vram() -> float:
        return 24.0

    deps = SupervisorDeps(settings=settings, llm=llm, ledger=ledger, vram_probe=vram)
    return build_supervisor(deps=deps).compile(checkpointer=InMemorySaver())


def config(thread: str, owner: str = "ana") -> dict[str, Any]:
    """A run config for one thread, acting for `owner` (in-process callers name the user they authenticated)."""
    return {"configurable": {"thread_id": thread, "owner": owner}}


def kinds(messages: list[Any]) -> list[str]:
    """human/ai per message."""
    return ["human" if isinstance(m, HumanMessage) else "ai" for m in messages]


async def test_rules_route_clear_intents_and_leave_ties_to_the_llm() -> None:
    assert classify("What is the capital of France?") == "answer"
    assert classify("Generate a red fox in the snow") == "generate"
    assert classify("show me what a cyberpunk cafe looks like") == "illustrate"
    assert classify("Plan a product showcase for our mug: hero, lifestyle, detail and thumbnail") == "plan"
    assert classify("according to our brand guide, what background do we use?") == "retrieve"
    assert classify("how much would 20 images cost?") == "cost"
    assert classify("draw how much it would cost") is None


async def test_a_plain_question_costs_exactly_one_llm_call(settings: Settings) -> None:
    llm = ScriptedChatModel(replies=["Paris."])
    graph = make_graph(settings, llm)
    out = await graph.ainvoke({"messages": [HumanMessage("What is the capital of France?")]}, config("q"))
    assert kinds(out["messages"]) == ["human", "ai"] and out["messages"][-1].content == "Paris."
    assert len(llm.calls) == 1 and out["intent"] == "answer" and out["routed_by"] == "rules"
    assert sum(h["llm_calls"] for h in out["hops"]) == 1
    assert [h["agent"] for h in out["hops"]] == ["classify", "answer"]
    assert out["hops"][1]["prompt_tokens"] > 0


async def test_an_ambiguous_request_spends_one_classification_call(settings: Settings) -> None:
    llm = ScriptedChatModel(replies=[{"intent": "cost"}])
    graph = make_graph(settings, llm)
    out = await graph.ainvoke({"messages": [HumanMessage("draw how much it would cost")]}, config("amb"))
    assert out["routed_by"] == "llm" and out["intent"] == "cost" and len(llm.calls) == 1
    assert "txt2img" in out["messages"][-1].content


async def test_generate_queues_one_job_without_any_llm_call(settings: Settings, ledger: LedgerService) -> None:
    llm = ScriptedChatModel(replies=[])
    graph = make_graph(settings, llm, ledger)
    out = await graph.ainvoke({"messages": [HumanMessage("Generate a red fox in the snow")]}, config("gen"))
    assert kinds(out["messages"]) == ["human", "ai"] and llm.calls == []
    assert out["messages"][-1].content.startswith("Queued 1 image(s)")
    (job,) = await ledger.list_jobs()
    assert job.owner == "ana" and job.params["prompt"] == "(red fox in the snow:1.2)", "SD1.5: weighted tags"
    assert job.workflow == "txt2img" and str(job.id) in out["jobs"]


HERONS_ANSWER = ("Herons are wading birds that eat fish and frogs. They stand still in shallow water and strike fast."
                 "\n\n[picture]\nsubject: a grey heron catching a fish\n"
                 "setting: in shallow water at the edge of a reed marsh\nmood: calm, soft morning light\n[/picture]")


async def test_illustrate_answers_first_then_queues_the_picture(settings: Settings, ledger: LedgerService) -> None:
    llm = ScriptedChatModel(replies=["A cyberpunk cafe glows with neon signs."])
    graph = make_graph(settings, llm, ledger)
    out = await graph.ainvoke({"messages": [HumanMessage("show me what a cyberpunk cafe looks like")]}, config("il"))
    assert kinds(out["messages"]) == ["human", "ai", "ai"]
    assert out["messages"][1].content == "A cyberpunk cafe glows with neon signs."
    assert "Queued 1" in out["messages"][2].content
    assert "[picture]" in str(llm.calls[0][0].content), "the one call is asked for the picture's description too"
    (job,) = await ledger.list_jobs()
    # The model left the description out: the picture is described from the request's subject and the answer.
    assert job.params["prompt"] == "(cyberpunk cafe:1.2), A cyberpunk cafe glows with neon signs"


async def test_an_illustrated_answer_is_one_call_and_its_picture_shows_the_answer(
    settings: Settings, ledger: LedgerService
) -> None:
    """The issue's example: "Show me what herons eat" queued `what herons eat, hero shot, centred product, …`."""
    llm = ScriptedChatModel(replies=[HERONS_ANSWER, "Fish, frogs, insects and small mammals."])
    graph = make_graph(settings, llm, ledger)
    out = await graph.ainvoke({"messages": [HumanMessage("Show me what herons eat")]}, config("herons"))
    assert out["intent"] == "illustrate" and len(llm.calls) == 1
    assert sum(h["llm_calls"] for h in out["hops"]) == 1
    shown = out["messages"][1].content
    assert shown == ("Herons are wading birds that eat fish and frogs. They stand still in shallow water and strike "
                     "fast."), "the person never sees the picture block"
    assert out["messages"][1].additional_kwargs == {}
    (job,) = await ledger.list_jobs()
    assert job.workflow == "txt2img" and job.params["prompt"] == (
        "(grey heron catching a fish:1.2), shallow water at the edge of a reed marsh, calm, soft morning light")
    assert job.params["negative"] == "blurry, low quality, watermark, text, deformed"
    assert out["briefs"][0]["brief"]["picture"] == {"subject": "a grey heron catching a fish",
                                                    "setting": "in shallow water at the edge of a reed marsh",
                                                    "mood": "calm, soft morning light"}
    plain = await graph.ainvoke({"messages": [HumanMessage("What do herons eat?")]}, config("plain"))
    assert plain["intent"] == "answer" and len(llm.calls) == 2, "a plain question: exactly one more call"
    assert "[picture]" not in str(llm.calls[1][0].content)


async def test_an_illustrated_answer_on_qwen_image_is_described_in_sentences(settings: Settings) -> None:
    llm = ScriptedChatModel(replies=[HERONS_ANSWER, HERONS_ANSWER])
    graph = make_graph(settings, llm)
    fast = await graph.ainvoke({"messages": [HumanMessage("Show me what herons eat")]},
                               {"configurable": {"thread_id": "q1", "owner": "ana", "workflow": "qwen-image-fast"}})
    (design,) = fast["briefs"]
    assert design["params"]["prompt"] == ("A grey heron catching a fish in shallow water at the edge of a reed marsh. "
                                          "Calm, soft morning light.")
    assert design["params"]["negative"] is None, "qwen-image-fast has no negative input"
    assert design["fitted"] == ["size 768×768 → 1328×1328 (a native size of qwen-image-fast)"], "none was written"
    standard = await graph.ainvoke({"messages": [HumanMessage("Show me what herons eat")]},
                                   {"configurable": {"thread_id": "q2", "owner": "ana", "workflow": "qwen-image"}})
    assert standard["briefs"][0]["params"]["prompt"] == design["params"]["prompt"]
    assert standard["briefs"][0]["params"]["negative"] == "blurry, low quality, watermark, deformed"
    assert len(llm.calls) == 2


async def test_a_costly_plan_waits_for_approval_and_generates_each_image_once(
    settings: Settings, ledger: LedgerService
) -> None:
    llm = ScriptedChatModel(replies=[SHOWCASE])
    graph = make_graph(settings, llm, ledger)
    ask = {"messages": [HumanMessage("Plan a product showcase for our copper espresso cup")]}
    paused = await graph.ainvoke(ask, config("plan"))
    pending = paused["__interrupt__"][0].value
    assert pending["estimate"]["images"] == 4 and pending["estimate"]["cost"] > settings.approval_cost
    assert [i["purpose"] for i in pending["images"]] == ["hero", "lifestyle", "detail", "thumbnail"]
    assert pending["images"][0]["workflow"] == "txt2img-hq" and await ledger.list_jobs() == []
    done = await graph.ainvoke(Command(resume={"action": "approve"}), config("plan"))
    assert kinds(done["messages"]) == ["human", "ai"] and "Queued 4 image(s)" in done["messages"][-1].content
    assert "make it a product showcase" in done["messages"][-1].content  # where the gallery with copy is made
    again = await graph.ainvoke(Command(resume={"action": "approve"}), config("plan"))  # a duplicate resume
    assert again["jobs"] == done["jobs"]
    assert len(await ledger.list_jobs()) == 4 and len(llm.calls) == 1


async def test_a_rejected_plan_generates_nothing_and_an_edit_changes_the_prompts(
    settings: Settings, ledger: LedgerService
) -> None:
    llm = ScriptedChatModel(replies=[SHOWCASE, SHOWCASE])
    graph = make_graph(settings, llm, ledger)
    ask = {"messages": [HumanMessage("Plan a product showcase for our copper espresso cup")]}
    await graph.ainvoke(ask, config("no"))
    rejected = await graph.ainvoke(Command(resume={"action": "reject"}), config("no"))
    assert rejected["messages"][-1].content == "Understood: nothing was generated."
    assert await ledger.list_jobs() == []
    await graph.ainvoke(ask, config("edit"))
    prompts = ["cup A", "cup B", "cup C", "cup D"]
    await graph.ainvoke(Command(resume={"action": "edit", "prompts": prompts}), config("edit"))
    assert sorted(j.params["prompt"] for j in await ledger.list_jobs()) == prompts


async def test_ollama_down_is_a_message_naming_the_fix(settings: Settings) -> None:
    from langchain_ollama import ChatOllama

    llm = ChatOllama(model="llama3.2", base_url="http://127.0.0.1:9")
    deps = SupervisorDeps(settings=settings, llm=llm)
    graph = build_supervisor(deps=deps).compile()
    out = await graph.ainvoke({"messages": [HumanMessage("What is the capital of France?")]})
    reply = out["messages"][-1]
    assert isinstance(reply, AIMessage) and "unreachable" in reply.content and "ollama serve" in reply.content


async def test_a_cost_question_is_answered_from_the_catalog(settings: Settings) -> None:
    llm = ScriptedChatModel(replies=[])
    out = await make_graph(settings, llm).ainvoke(
        {"messages": [HumanMessage("How much would 10 hero images cost?")]}, config("c"))
    assert llm.calls == [] and "txt2img-hq" in out["messages"][-1].content
    assert out["estimate"]["images"] == 10 and out["estimate"]["cost"] == pytest.approx(0.125)


async def test_the_cost_agent_follows_the_users_models_config_and_names_the_rule(tmp_path: Path) -> None:
    from tests.user_workflows import S12_CONFIG, make_user_workflows

    settings = load_settings(data_dir=tmp_path / "d", comfyui_urls="http://127.0.0.1:9", models_config=S12_CONFIG,
                             workflows_dir=make_user_workflows(tmp_path / "workflows"))
    graph = make_graph(settings, ScriptedChatModel(replies=[]))
    out = await graph.ainvoke({"messages": [HumanMessage("How much would 4 urgent thumbnails cost?")]}, config("r"))
    reply = out["messages"][-1].content
    assert reply.startswith("For 4 image(s) I would use qwen-image-fast: medium quality, ~30 s and 0.01 per image, "
                            "needs 6 GB (24 GB free), routing_rules.by_purpose.thumbnail → qwen-image-fast.")
    assert "Also considered: txt2img (routing_rules.by_purpose.thumbnail → qwen-image-fast decided first" in reply
    assert out["estimate"] == {"images": 4, "seconds": 120, "cost": pytest.approx(0.04)}
    small = await graph.ainvoke({"messages": [HumanMessage("Which workflow fits in 6 GB of VRAM?")]}, config("s"))
    text = small["messages"][-1].content
    assert "I would use qwen-image-fast" in text and "routing_rules.by_available_vram.low → qwen-image-fast" in text
    assert ("Rules tried first: routing_rules.by_urgency.standard → qwen-image-standard (workflow qwen-image) did "
            "not apply: qwen-image: needs 8 GB of VRAM, 6 GB free.") in text


async def test_the_designer_routes_to_a_users_workflow_and_its_rules(tmp_path: Path) -> None:
    from tests.user_workflows import S12_CONFIG, make_user_workflows

    settings = load_settings(data_dir=tmp_path / "d", comfyui_urls="http://127.0.0.1:9", models_config=S12_CONFIG,
                             workflows_dir=make_user_workflows(tmp_path / "workflows"), approval_cost=10,
                             approval_gpu_seconds=10000)
    graph = make_graph(settings, ScriptedChatModel(replies=[]))
    out = await graph.ainvoke({"messages": [HumanMessage("Generate a hero image of a copper kettle")]}, config("h"))
    [design] = out["briefs"]
    assert design["route"]["workflow"] == "qwen-image-ultra"
    assert design["route"]["rule"] == "routing_rules.by_purpose.hero_image → qwen-image-ultra"
    # Its sidecar names no prompt style; its model file is Qwen-Image's: sentences, with the hero look (a product).
    assert design["params"]["prompt"] == ("A copper kettle. A hero shot: the product centred on a clean background, in "
                                          "studio lighting.")
    mine = await graph.ainvoke({"messages": [HumanMessage("Generate a fox in the snow")]},
                               {"configurable": {"thread_id": "m", "owner": "ana", "workflow": "my-sketch"}})
    assert mine["briefs"][0]["route"]["workflow"] == "my-sketch", "a workflow without a catalog entry can be picked"


async def test_each_turn_is_routed_afresh_in_one_thread(settings: Settings) -> None:
    llm = ScriptedChatModel(replies=["Paris.", "Berlin."])
    graph = make_graph(settings, llm)
    await graph.ainvoke({"messages": [HumanMessage("Capital of France?")]}, config("t"))
    out = await graph.ainvoke({"messages": [HumanMessage("And of Germany?")]}, config("t"))
    assert kinds(out["messages"]) == ["human", "ai", "human", "ai"] and out["messages"][-1].content == "Berlin."
    assert out["trail"] == ["answer"]


@pytest.mark.parametrize("backend", ["machine", "embedded"])
async def test_a_paused_plan_survives_its_process_and_is_generated_once(
    backend: str, machine_pg_url: str, tmp_path: Path
) -> None:
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"ATELIER_DATA_DIR": str(tmp_path / "d"), "COMFYUI_URLS": "http://127.0.0.1:9"}
    if backend == "machine":
        env["DATABASE_URL"] = machine_pg_url
    command = [sys.executable, "-m", "tests.integration.supervisor_proc"]
    first = subprocess.Popen([*command, "pause", "t-1"], cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    line = first.stdout.readline()
    assert line.startswith("PAUSED"), line
    first.kill()  # the process dies while the approval is pending
    first.wait(10)
    outcomes = []
    for _ in range(2):  # approve, then approve again (a double click, a retried request)
        resumed = subprocess.run([*command, "resume", "t-1"], cwd=root, env=env, capture_output=True, text=True,
                                 timeout=120)
        assert resumed.returncode == 0, resumed.stderr
        outcomes.append(json.loads(resumed.stdout.strip().splitlines()[-1]))
    assert outcomes[0]["llm_calls"] == 0, "the plan came from the checkpoint, not from a new LLM call"
    assert len(outcomes[0]["jobs"]) == 4 and outcomes[1]["jobs"] == outcomes[0]["jobs"]
    assert "Queued 4 image(s)" in outcomes[0]["reply"]
    if backend == "embedded":
        from atelier.tools.ledger.database import stop_embedded

        settings = load_settings(data_dir=tmp_path / "d")
        from atelier.tools.ledger.service import database_url

        async with LedgerService.open(settings, conninfo=database_url(settings)) as svc:
            assert len(await svc.list_jobs()) == 4
        stop_embedded(settings, force=True)
        return
    async with LedgerService.open(load_settings(data_dir=tmp_path / "d"), conninfo=machine_pg_url) as svc:
        assert len(await svc.list_jobs()) == 4


async def test_an_illustrated_answer_streams_before_the_image_is_queued(settings: Settings,
                                                                         ledger: LedgerService) -> None:
    llm = StreamingScriptedChatModel(replies=["A lighthouse stands on a cliff at dusk.\n**[Picture]**\n"
                                              "subject: a white lighthouse on a cliff\nsetting: above a rough sea\n"
                                              "mood: dusk, warm lamp light\n[/picture]"])
    graph = make_graph(settings, llm, ledger)
    order: list[str] = []
    streamed = ""
    ask = {"messages": [HumanMessage("show me what a lighthouse at dusk looks like")]}
    async for mode, data in graph.astream(ask, config("stream"), stream_mode=["messages", "updates"]):
        if mode == "messages" and data[1].get("langgraph_node") == "answer":
            order.append("answer text")
            streamed += str(data[0].content)
        elif mode == "updates" and "submit" in data:
            order.append("image queued")
    assert order.index("answer text") < order.index("image queued")
    assert order.count("answer text") > 3, "streamed token by token"
    assert streamed.strip() == "A lighthouse stands on a cliff at dusk.", "the picture block is never streamed"
    (job,) = await ledger.list_jobs()
    assert job.params["prompt"] == "(white lighthouse on a cliff:1.2), above a rough sea, dusk, warm lamp light"
    assert len(llm.calls) == 1


async def test_retrieve_answers_from_the_owners_documents_with_sources(settings: Settings) -> None:
    from atelier.tools.memory.backends import open_memory
    from atelier.tools.memory.documents import chunk_file, find_documents

    memory = open_memory(settings)
    try:
        corpus = Path(__file__).resolve().parents[1] / "data" / "corpus"
        for path in find_documents([corpus]):
            memory.add_documents(chunk_file(path, "ana"))
        llm = ScriptedChatModel(replies=["Dark walnut, never white [1]."])

        async def vram() -> float:
            return 24.0

        deps = SupervisorDeps(settings=settings, llm=llm, memory=memory, vram_probe=vram)
        graph: Any = build_supervisor(deps=deps).compile()
        ask = "according to our brand guide, what background do we use for the cups?"
        out = await graph.ainvoke({"messages": [HumanMessage(ask)]}, config("rag-ana", "ana"))
        reply = out["messages"][-1].content
        assert kinds(out["messages"]) == ["human", "ai"] and len(llm.calls) == 1
        assert reply.startswith("Dark walnut") and "Sources:" in reply and "brand-guide.md" in reply
        assert "[1] Lumen Coffee brand guide" in str(llm.calls[0][0].content), "the passages went to the model"
        other = await graph.ainvoke({"messages": [HumanMessage(ask)], "owner": "ana"}, config("rag-bea", "bea"))
        assert "found nothing" in other["messages"][-1].content and len(llm.calls) == 1, "bea sees none of ana's"
    finally:
        memory.close()


async def test_a_budget_in_a_cost_question_picks_a_cheaper_workflow(settings: Settings) -> None:
    llm = ScriptedChatModel(replies=[])
    out = await make_graph(settings, llm).ainvoke(
        {"messages": [HumanMessage("How much would 10 hero images cost with a budget of 0.02?")]}, config("b"))
    reply = out["messages"][-1].content
    assert "txt2img-turbo" in reply and "within a budget" in reply and llm.calls == []


async def test_the_designer_uses_the_library_and_its_ab_test(settings: Settings, ledger: LedgerService) -> None:
    from atelier.agents.visual_designer import PURPOSE_LOOK
    from atelier.tools.prompts.models import PromptDraft, VariantSpec

    await ledger.prompts.save(PromptDraft(name="hero-a", template="{{ subject }}, {{ look }}, walnut",
                                          purpose="thumbnail", negative="plastic"), author="t")
    await ledger.prompts.save(PromptDraft(name="hero-a", template="{{ subject }}, {{ look }}, marble"), author="t")
    await ledger.abtests.create("surface", [VariantSpec(label="walnut", prompt="hero-a", version=1),
                                            VariantSpec(label="marble", prompt="hero-a", version=2,
                                                        workflow="txt2img-turbo")], author="t", purpose="thumbnail")
    graph = make_graph(settings, ScriptedChatModel(replies=[]), ledger)
    seen = []
    for turn in range(8):
        # Fixed message ids: the arm is a hash of thread, turn and index, so the spread over arms is the same each run.
        ask = HumanMessage(f"generate a thumbnail image of cup {turn}", id=f"cup-turn-{turn}")
        state = await graph.ainvoke({"messages": [ask]}, config(f"ab-{turn}"))
        (design,) = state["briefs"]
        arm = design["prompt_ref"]["variant"]
        surface = "walnut" if arm == "walnut" else "marble"
        assert design["params"]["prompt"] == f"cup {turn}, {PURPOSE_LOOK['thumbnail'][0]}, {surface}"
        assert design["params"]["negative"].startswith("plastic")
        assert design["route"]["workflow"] == ("txt2img-turbo" if arm == "marble" else "txt2img")
        seen.append(arm)
    assert set(seen) == {"walnut", "marble"}
    report = await ledger.abtests.report("surface")
    uses = {r.label: r.uses for r in report.variants}
    assert uses == {"walnut": seen.count("walnut"), "marble": seen.count("marble")}
    stats = {s.version: s.uses for s in await ledger.prompts.stats("hero-a")}
    assert stats == {1: seen.count("walnut"), 2: seen.count("marble")}
    # A forced workflow keeps the image out of an arm that sets one.
    forced = await graph.ainvoke({"messages": [HumanMessage("generate a hero image of a kettle")]},
                                 {"configurable": {"thread_id": "forced", "owner": "ana", "workflow": "txt2img"}})
    (design,) = forced["briefs"]
    assert design["route"]["workflow"] == "txt2img"
    assert design["prompt_ref"] is None or design["prompt_ref"]["ab_test"] is None
