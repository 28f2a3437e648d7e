"""What the showcase tests share: a shot list and copy the scripted model answers with, a worker on the fake
ComfyUI, and a showcase graph on a ledger."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver

from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.showcase import build_showcase
from atelier.tools.ledger.service import LedgerService
from atelier.tools.settings import Settings
from atelier.tools.worker.worker import Worker, WorkerOptions

__all__ = ["COPY", "HOSTILE", "PLAN", "config", "make_showcase", "running_worker"]

PLAN: dict[str, Any] = {"briefs": [
    {"purpose": "hero", "subject": "a copper espresso cup", "notes": "dark walnut table"},
    {"purpose": "lifestyle", "subject": "a copper espresso cup in a cafe", "notes": "morning light"},
    {"purpose": "detail", "subject": "the hammered rim of a copper espresso cup", "notes": ""},
    {"purpose": "thumbnail", "subject": "a copper espresso cup", "notes": ""},
]}
COPY: dict[str, Any] = {"headline": "Copper that keeps your espresso hot", "images": [
    {"image": 1, "caption": "The cup, centre stage", "marketing_copy": "Hand-hammered copper on dark walnut."},
    {"image": 2, "caption": "Morning ritual", "marketing_copy": "Your first espresso, in the light it deserves."},
    {"image": 3, "caption": "Every dent by hand", "marketing_copy": "The rim shows the maker's hammer."},
    {"image": 4, "caption": "Copper cup", "marketing_copy": "Small, warm, yours."},
]}
# A brief that would run script and load remote content if any of it reached a page unescaped.
HOSTILE = ('Our cup <script>alert("x")</script><img src=x onerror=alert(1)> "quoted" & <b>bold</b> '
           "<a href='javascript:alert(2)'>link</a>")


def config(thread: str, owner: str = "ana", **options: Any) -> dict[str, Any]:
    """A run config for one thread, acting for `owner`, with per-run options (input_image, workflow …)."""
    return {"configurable": {"thread_id": thread, "owner": owner, **options}}


def make_showcase(settings: Settings, llm: BaseChatModel, ledger: LedgerService | None,
                  checkpointer: BaseCheckpointSaver[Any], vram_gb: float = 24.0) -> Any:
    """The compiled showcase graph on `ledger`, with a fixed amount of free VRAM."""

    async def vram() -> float:
        return vram_gb

    deps = SupervisorDeps(settings=settings, llm=llm, ledger=ledger, vram_probe=vram)
    return build_showcase(deps=deps).compile(checkpointer=checkpointer)


@contextlib.asynccontextmanager
async def running_worker(svc: LedgerService) -> AsyncIterator[None]:
    """A ledger worker on the fake ComfyUI while the block runs."""
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(svc.ledger, svc.settings, svc.store, WorkerOptions(lease_seconds=3)).run(stop))
    try:
        yield
    finally:
        stop.set()
        await task
