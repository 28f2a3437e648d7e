"""The job API's memory: opened beside the ledger (a failure only disables the memory routes) with its indexer."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from atelier.tools.ledger.service import LedgerService
from atelier.tools.memory.backends import open_memory_or_reason
from atelier.tools.memory.indexer import MemoryIndexer

__all__ = ["memory_with_indexer"]

log = logging.getLogger(__name__)


@asynccontextmanager
async def memory_with_indexer(service: LedgerService, state: Any) -> AsyncIterator[None]:
    """Set `state.memory` (or `state.memory_problem`) and follow succeeded jobs into it until the block ends."""
    memory, state.memory_problem = await open_memory_or_reason(service.settings, "the job API")
    state.memory = memory
    if memory is None:
        yield
        return
    stop = asyncio.Event()
    following = asyncio.create_task(MemoryIndexer.for_service(service, memory).follow(stop), name="memory-indexer")
    try:
        yield
    finally:
        stop.set()
        with suppress(asyncio.TimeoutError):
            await asyncio.wait_for(following, 10)
        memory.close()
