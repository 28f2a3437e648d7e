"""The shared tools themselves: waiting keeps reporting, a timeout never loses the job, paths are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import atelier.tools.toolkit as toolkit
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.service import LedgerService
from atelier.tools.settings import load_settings
from atelier.tools.toolkit import GenerateImageArgs, SubmitJobArgs, ToolContext, generate_image, submit_job

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def ctx(machine_pg_url: str, tmp_path: Path) -> AsyncIterator[ToolContext]:
    """Tools on a fresh ledger with no worker running (jobs stay queued)."""
    settings = load_settings(data_dir=tmp_path / "d", comfyui_urls="http://127.0.0.1:9")
    async with LedgerService.open(settings, conninfo=machine_pg_url) as ledger:
        yield ToolContext(settings=settings, ledger=ledger, owner="ana")


async def test_a_waiting_call_keeps_reporting_and_its_timeout_returns_the_job(
    ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(toolkit, "KEEPALIVE_SECONDS", 0.2)
    said: list[str] = []

    async def progress(_done: float, _total: float | None, message: str) -> None:
        said.append(message)

    result = await generate_image(ctx, GenerateImageArgs(prompt="a heron", timeout_seconds=1), progress)
    assert result.status == "queued" and "ask job_status for it later" in result.message
    waiting = f"job {result.job_id[:8]} still waiting for the GPU"
    assert said[0].startswith("queued as job ") and said.count(waiting) >= 3
    assert (await ctx.ledger.get(result.job_id)).status == "queued", "the job is still there, not lost"


async def test_not_waiting_returns_the_job_id_at_once_and_keys_deduplicate(ctx: ToolContext) -> None:
    first = await generate_image(ctx, GenerateImageArgs(prompt="a heron", wait=False))
    assert first.status == "queued" and "later" in first.message
    one = await submit_job(ctx, SubmitJobArgs(prompt="an egret", idempotency_key="k-1"))
    again = await submit_job(ctx, SubmitJobArgs(prompt="an egret", idempotency_key="k-1"))
    assert one.job_id == again.job_id


async def test_tools_name_workflows_never_server_files(ctx: ToolContext) -> None:
    with pytest.raises(AtelierError, match="is a file path"):
        await submit_job(ctx, SubmitJobArgs(prompt="x", workflow="/etc/flow.json"))
