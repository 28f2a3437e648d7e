"""Chat turns without a browser: conversations and pending approvals survive a restart; the page's options work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atelier.studio import (
    Approval,
    ChatOptions,
    ChatServices,
    ImagesQueued,
    Reply,
    TurnEvent,
    run_turn,
    thread_history,
)
from atelier.tools.settings import Settings, load_settings
from tests.fakes.chat_model import ScriptedChatModel
from tests.fakes.comfyui_server import FakeComfyUI

pytestmark = pytest.mark.asyncio

PLAN = json.dumps({"briefs": [{"purpose": p, "subject": f"a walnut desk, {p}"}
                              for p in ("hero", "lifestyle", "detail", "thumbnail")]})


@pytest.fixture
def settings(tmp_path: Path, fake_comfy: FakeComfyUI) -> Settings:
    """Thresholds that make a four-image plan ask first; ComfyUI answers VRAM questions."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls=fake_comfy.url, approval_cost=0.02,
                         approval_gpu_seconds=60)


async def _turn(services: ChatServices, thread: str, **kwargs: object) -> list[TurnEvent]:
    return [event async for event in run_turn(services, thread, "ana", follow_jobs=False, **kwargs)]  # type: ignore[arg-type]


async def test_a_conversation_and_a_pending_approval_survive_a_restart(settings: Settings, pg_url: str) -> None:
    llm = ScriptedChatModel(replies=["Oak or walnut, oiled.", PLAN])
    async with ChatServices.open(settings, llm=llm, conninfo=pg_url, with_memory=False) as services:
        await _turn(services, "t1", message="Which wood suits a small desk?")
        drawn = await _turn(services, "t1", message="draw a walnut desk by a window")
        paused = await _turn(services, "t1", message="Plan a catalogue: hero, lifestyle, detail and thumbnail images")
    assert [type(e).__name__ for e in drawn] == ["Reply", "ImagesQueued"]
    assert isinstance(paused[-1], Approval) and len(paused[-1].images) == 4

    async with ChatServices.open(settings, llm=ScriptedChatModel(replies=[]), conninfo=pg_url,
                                 with_memory=False) as services:
        threads = await services.threads.recent("ana")
        assert [(t.id, t.title) for t in threads] == [("t1", "Which wood suits a small desk?")]
        assert await services.threads.recent("ben") == []
        items, pending = await thread_history(services, "t1")
        assert [(i.role, i.text[:12], i.job is not None) for i in items] == [
            ("user", "Which wood s", False), ("assistant", "Oak or walnu", False),
            ("user", "draw a walnu", False), ("assistant", "Queued 1 ima", False), ("assistant", "", True),
            ("user", "Plan a catal", False),
        ]
        assert pending is not None and pending.estimate["images"] == 4
        resumed = await _turn(services, "t1", resume={"action": "approve"})
        queued = [e for e in resumed if isinstance(e, ImagesQueued)]
        assert len(queued) == 1 and len(queued[0].jobs) == 4
        items, pending = await thread_history(services, "t1")
        assert pending is None and sum(1 for i in items if i.job is not None) == 5
        # Approving twice (a double click, a second tab) queues nothing more.
        again = await _turn(services, "t1", resume={"action": "approve"})
        assert not [e for e in again if isinstance(e, ImagesQueued)]
        assert len(await services.ledger.list_jobs(owner="ana")) == 5


async def test_page_options_choose_the_workflow_quality_and_when_to_illustrate(
    settings: Settings, machine_pg_url: str
) -> None:
    llm = ScriptedChatModel(replies=["A tall white tower with a red lamp.", "Bread, butter, jam."])
    async with ChatServices.open(settings, llm=llm, conninfo=machine_pg_url, with_memory=False) as services:
        forced = await _turn(services, "o1", message="draw a fox", options=ChatOptions(workflow="txt2img-hq"))
        fast = await _turn(services, "o2", message="draw a fox", options=ChatOptions(quality="fast"))
        never = await _turn(services, "o3", message="What does a lighthouse look like?",
                            options=ChatOptions(illustrate="never"))
        always = await _turn(services, "o4", message="What is a good breakfast?",
                             options=ChatOptions(illustrate="always"))
        bad = await _turn(services, "o5", message="draw a fox", options=ChatOptions(quality="extreme"))

    def workflows(events: list[TurnEvent]) -> list[str]:
        return [job.workflow for e in events if isinstance(e, ImagesQueued) for job in e.jobs]

    assert workflows(forced) == ["txt2img-hq"]
    assert workflows(fast) == ["txt2img-turbo"]
    assert workflows(never) == [] and [e.text for e in never if isinstance(e, Reply)] == [
        "A tall white tower with a red lamp."]
    assert workflows(bad) == [] and "quality one of fast/medium/high/ultra" in " ".join(
        e.text for e in bad if isinstance(e, Reply))
    assert len(workflows(always)) == 1 and isinstance(always[0], Reply) and always[0].text == "Bread, butter, jam."
