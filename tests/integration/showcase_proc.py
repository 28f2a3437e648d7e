"""A process that runs the showcase graph on PostgreSQL (checkpointer + ledger), for the restart test.

    python -m tests.integration.showcase_proc start THREAD   → plans, approves, queues, prints WAITING <showcase id>
                                                               once it waits for the images (no worker runs), waits
    python -m tests.integration.showcase_proc resume THREAD  → a new graph on the same checkpointer continues the
                                                               thread with a worker; prints the outcome as JSON
DATABASE_URL, ATELIER_DATA_DIR and COMFYUI_URLS come from the environment.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.types import Command

from atelier.graphs.checkpoint import postgres_checkpointer
from atelier.tools.ledger.service import LedgerService
from atelier.tools.settings import load_settings
from tests.fakes.chat_model import ScriptedChatModel
from tests.showcases import COPY, PLAN, config, make_showcase, running_worker


async def main(action: str, thread: str) -> None:
    """Run one side of the test."""
    settings = load_settings(approval_cost=0.02, approval_gpu_seconds=60)
    llm = ScriptedChatModel(replies=[PLAN] if action == "start" else [COPY])
    async with LedgerService.open(settings) as ledger, postgres_checkpointer(settings) as saver:
        graph = make_showcase(settings, llm, ledger, saver)
        cfg: Any = config(thread)
        if action == "start":
            await graph.ainvoke({"messages": [HumanMessage("A showcase for our copper cup")]}, cfg,
                                durability="sync")
            async for chunk in graph.astream(Command(resume={"action": "approve"}), cfg, stream_mode="custom",
                                             durability="sync"):
                print("WAITING", chunk["showcase"], chunk["stage"], chunk["done"], chunk["total"], flush=True)
                await asyncio.sleep(3600)  # the test kills this process here, mid-wait
            return
        async with running_worker(ledger):
            out = await graph.ainvoke(None, cfg, durability="sync")
        print(json.dumps({"jobs": [str(j.id) for j in await ledger.list_jobs()], "llm_calls": len(llm.calls),
                          "reply": out["messages"][-1].content, "showcase": out["showcase"],
                          "trail": out["trail"]}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
