"""Adaptive quality: successes teach measured times per workflow and server; a time target steps quality down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from atelier.agents.cost_router import choose_route
from atelier.tools.ledger.models import JobOutput, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore, output_key
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import load_settings

SERVER = "http://127.0.0.1:8188"


@pytest_asyncio.fixture
async def svc(pg_url: str, tmp_path: Path) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database (both PostgreSQLs)."""
    settings = load_settings(data_dir=tmp_path / "data", comfyui_urls=SERVER)
    async with LedgerService.open(settings, conninfo=pg_url, store=LocalOutputStore(tmp_path / "out")) as service:
        yield service


async def _run(svc: LedgerService, workflow: str, seconds: float, seed: int) -> None:
    """Submit, claim and complete one job that took `seconds` on ComfyUI."""
    params = GenerationParams(prompt="a fox", seed=seed, steps=4)
    await svc.submit(JobRequest(params=params, workflow=workflow))
    claim = await svc.ledger.claim("w", server=SERVER, vram_free_gb=24, known_servers=[SERVER], lease_seconds=30)
    assert claim is not None
    stored = svc.store.put(output_key(str(claim.job.id), 0, when=datetime.now(UTC)), b"png")
    output = JobOutput(uri=stored.uri, key=stored.key, size=stored.size, sha256=stored.sha256, node_id="9",
                       comfy_filename="x.png")
    await svc.ledger.complete(claim.job, [output], gpu_seconds=seconds, actual_cost=0.01)


@pytest.mark.asyncio
async def test_successes_teach_a_moving_average_per_workflow_and_server(svc: LedgerService) -> None:
    await _run(svc, "txt2img-hq", 10.0, 1)
    await _run(svc, "txt2img-hq", 20.0, 2)
    await _run(svc, "txt2img", 3.0, 3)
    timings = {(t.workflow, t.server): (t.runs, t.avg_seconds) for t in await svc.timings.all()}
    assert timings == {("txt2img-hq", SERVER): (2, pytest.approx(12.0)), ("txt2img", SERVER): (1, 3.0)}
    # An identical request answered from the cache ran nothing: it teaches nothing.
    cached = await svc.submit(JobRequest(params=GenerationParams(prompt="a fox", seed=3, steps=4), workflow="txt2img"))
    assert cached.cached
    assert (await svc.timings.estimates()) == {"txt2img-hq": pytest.approx(12.0), "txt2img": 3.0}


def test_a_time_target_steps_quality_down_until_it_fits() -> None:
    best = choose_route("hero")
    assert best.workflow == "txt2img-hq"
    fits = choose_route("hero", target_seconds=10)
    assert fits.workflow == "txt2img" and "stepped down from txt2img-hq" in fits.reason
    tight = choose_route("hero", target_seconds=2)
    assert tight.workflow == "txt2img-turbo"
    nothing = choose_route("hero", target_seconds=0.01)
    assert nothing.workflow == "txt2img-turbo" and "no workflow fits" in nothing.reason


def test_measured_times_replace_the_catalog_guess() -> None:
    quick_hq = choose_route("hero", target_seconds=10, measured={"txt2img-hq": 6.5})
    assert quick_hq.workflow == "txt2img-hq" and quick_hq.seconds == 6.5 and "measured" in quick_hq.reason
    slow_medium = choose_route("hero", target_seconds=10, measured={"txt2img": 30.0})
    assert slow_medium.workflow == "txt2img-turbo"
