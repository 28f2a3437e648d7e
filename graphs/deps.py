"""What the supervisor's agents act through: settings, the chat model, the ledger, the memory, live VRAM."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from langchain_core.language_models import BaseChatModel

from atelier.agents.llm import build_chat_model
from atelier.tools.comfyui.probe import most_free_vram
from atelier.tools.ledger.service import LedgerService
from atelier.tools.memory.store import MemoryStore
from atelier.tools.settings import Settings

__all__ = ["SupervisorDeps", "comfy_vram_free"]


async def comfy_vram_free(settings: Settings) -> float | None:
    """The most free VRAM any configured ComfyUI reports (GB); None when none answers."""
    return await most_free_vram(settings.comfyui_urls, timeout=3.0)


@dataclass
class SupervisorDeps:
    """Everything the graph touches, injected (tests pass fakes; the default opens services on first use)."""

    settings: Settings
    llm: BaseChatModel | None = None
    ledger: LedgerService | None = None
    memory: MemoryStore | None = None
    vram_probe: Callable[[], Awaitable[float | None]] | None = None
    open_services: bool = False
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack, repr=False)

    def chat_model(self) -> BaseChatModel:
        """The agents' chat model (ChatOllama from settings unless one was injected)."""
        if self.llm is None:
            self.llm = build_chat_model(self.settings)
        return self.llm

    async def get_ledger(self) -> LedgerService | None:
        """The job ledger; opened on first use when `open_services` (the default graph), else as injected."""
        if self.ledger is None and self.open_services:
            self.ledger = await self._stack.enter_async_context(LedgerService.open(self.settings))
        return self.ledger

    async def vram_free_gb(self) -> float | None:
        """Free VRAM right now (from /system_stats)."""
        if self.vram_probe is not None:
            return await self.vram_probe()
        return await comfy_vram_free(self.settings)

    async def aclose(self) -> None:
        """Close what was opened on first use."""
        await self._stack.aclose()
