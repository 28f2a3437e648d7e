"""A process that runs the supervisor on PostgreSQL (checkpointer + ledger), for the restart test.

    python -m tests.integration.supervisor_proc pause THREAD   → plans, pauses for approval, prints PAUSED, waits
    python -m tests.integration.supervisor_proc resume THREAD  → approves, prints the job ids
DATABASE_URL and ATELIER_DATA_DIR come from the environment.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command

from atelier.graphs.checkpoint import postgres_checkpointer
from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.state import SupervisorState
from atelier.graphs.supervisor import build_supervisor
from atelier.tools.ledger.service import LedgerService
from atelier.tools.settings import load_settings
from tests.fakes.chat_model import ScriptedChatModel

SHOWCASE = {"briefs": [{"purpose": p, "subject": "a copper espresso cup", "notes": ""}
                       for p in ("hero", "lifestyle", "detail", "thumbnail")]}


async def main(action: str, thread: str) -> None:
    """Run one side of the test."""
    settings = load_settings(approval_cost=0.02, approval_gpu_seconds=60)

    async def vram() -> float:
        return 24.0

    llm = ScriptedChatModel(replies=[SHOWCASE] if action == "pause" else [])
    async with LedgerService.open(settings) as ledger, postgres_checkpointer(settings) as saver:
        deps = SupervisorDeps(settings=settings, llm=llm, ledger=ledger, vram_probe=vram)
        graph = build_supervisor(deps=deps).compile(checkpointer=saver)
        config: RunnableConfig = {"configurable": {"thread_id": thread}}
        if action == "pause":
            state: SupervisorState = {"messages": [HumanMessage("Plan a product showcase for our cup")]}
            out: Any = await graph.ainvoke(state, config)
            print("PAUSED", json.dumps(out["__interrupt__"][0].value["estimate"]), flush=True)
            await asyncio.sleep(3600)  # the test kills this process here
        else:
            out = await graph.ainvoke(Command(resume={"action": "approve"}), config)
            print(json.dumps({"jobs": out["jobs"], "llm_calls": len(llm.calls),
                              "reply": out["messages"][-1].content}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
