"""What the supervisor's agents act through: settings, the chat model, the ledger, the memory, live VRAM and the
model files each ComfyUI has."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from langchain_core.language_models import BaseChatModel

from atelier.agents.llm import build_chat_model
from atelier.tools.comfyui.model_inventory import ModelInventory, fetch_inventories
from atelier.tools.comfyui.probe import most_free_vram
from atelier.tools.ledger.service import LedgerService
from atelier.tools.memory.backends import open_memory_or_reason
from atelier.tools.memory.store import MemoryStore
from atelier.tools.settings import Settings

__all__ = ["SupervisorDeps", "comfy_vram_free"]

log = logging.getLogger(__name__)


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
    inventory_probe: Callable[[list[str]], Awaitable[list[ModelInventory]]] | None = None
    open_services: bool = False
    memory_problem: str | None = None
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack, repr=False)
    _memory_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

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

    async def get_memory(self) -> MemoryStore | None:
        """The memory; opened on first use when `open_services` (None, with `memory_problem` saying why, if it fails).

        The default graphs `langgraph.json` serves open it here, so the LangGraph server reads and writes the same
        memory as the chat, the CLI and the indexer (pgvector in the shared database, or the Qdrant server).
        """
        if self.memory is not None or not self.open_services or self.memory_problem is not None:
            return self.memory
        async with self._memory_lock:
            if self.memory is None and self.memory_problem is None:
                self.memory, self.memory_problem = await open_memory_or_reason(self.settings, "the graph")
                if self.memory is not None:
                    self._stack.callback(self.memory.close)
        return self.memory

    async def vram_free_gb(self) -> float | None:
        """Free VRAM right now (from /system_stats)."""
        if self.vram_probe is not None:
            return await self.vram_probe()
        return await comfy_vram_free(self.settings)

    async def model_inventories(self, folders: Iterable[str]) -> list[ModelInventory]:
        """The model files in `folders` of each ComfyUI that answers (empty: none did, nothing is known)."""
        wanted = sorted(set(folders))
        if self.inventory_probe is not None:
            return await self.inventory_probe(wanted)
        return list(await fetch_inventories(self.settings.comfyui_urls, wanted, timeout=3.0))

    async def aclose(self) -> None:
        """Close what was opened on first use."""
        await self._stack.aclose()
