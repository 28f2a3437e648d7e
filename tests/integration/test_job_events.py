"""WS /jobs/{id}/events on a real server: progress, previews, the final event, and a reconnect mid-job."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
import websockets

from atelier.api.events import NOT_FOUND_CLOSE
from atelier.api.jobs import build_job_api
from atelier.tools.ledger.models import JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings
from atelier.tools.worker.worker import Worker, WorkerOptions
from tests.fakes.comfyui_server import FakeComfyUI

pytestmark = pytest.mark.asyncio


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def settings(tmp_path: Path, fake_comfy: FakeComfyUI) -> Settings:
    """Settings on the fake ComfyUI, whose steps take long enough to watch."""
    fake_comfy.step_seconds = 0.08
    return load_settings(data_dir=tmp_path / "d", comfyui_urls=fake_comfy.url, lease_seconds=3)


@pytest_asyncio.fixture
async def svc(machine_pg_url: str, settings: Settings) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database."""
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "out")) as service:
        yield service


@pytest_asyncio.fixture
async def base(svc: LedgerService, settings: Settings) -> AsyncIterator[str]:
    """The job API served by uvicorn on a loopback port (same event loop as the ledger)."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(build_job_api(settings, service=svc), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest_asyncio.fixture
async def worker(svc: LedgerService, settings: Settings) -> AsyncIterator[None]:
    """One worker feeding the fake ComfyUI."""
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(svc.ledger, settings, svc.store, WorkerOptions(lease_seconds=3)).run(stop))
    yield
    stop.set()
    await task


async def _submit(svc: LedgerService, steps: int = 12) -> str:
    outcome = await svc.submit(JobRequest(params=GenerationParams(prompt="a kite over dunes", seed=5, steps=steps),
                                          workflow="txt2img", use_cache=False))
    return str(outcome.job.id)


async def _collect(url: str, *, stop_after: str | None = None) -> list[dict[str, Any]]:
    """Messages until the server closes (or until the first of kind `stop_after`, then hang up)."""
    messages: list[dict[str, Any]] = []
    async with websockets.connect(url) as ws:
        async for raw in ws:
            messages.append(json.loads(raw))
            if stop_after is not None and messages[-1]["type"] == stop_after:
                break
    return messages


async def test_events_stream_progress_previews_and_the_image(base: str, svc: LedgerService, worker: None) -> None:
    job = await _submit(svc)
    messages = await asyncio.wait_for(_collect(f"ws://{base}/jobs/{job}/events"), 30)
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "status" and kinds[-1] == "done"
    assert kinds.index("submitted") < kinds.index("started") < kinds.index("progress")
    steps = [(m["step"], m["max"]) for m in messages if m["type"] == "progress"]
    assert steps[0] == (1, 12) and steps[-1] == (12, 12) and steps == sorted(steps)
    previews = [m for m in messages if m["type"] == "preview"]
    assert previews, "the fake ComfyUI sends a preview frame per step; at least one must come through"
    header, _, data = previews[0]["image"].partition(",")
    assert header == "data:image/jpeg;base64" and base64.b64decode(data).startswith(b"\xff\xd8")
    seqs = [m["seq"] for m in messages if m["seq"] is not None]
    assert seqs == sorted(set(seqs))
    done = messages[-1]
    assert done["status"] == "succeeded" and done["images"] == [f"http://{base}/jobs/{job}/images/0"]
    async with httpx.AsyncClient() as http:
        picture = await http.get(done["images"][0])
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
    # The finished job keeps its progress but not its preview frames.
    assert not [e for e in await svc.events.read([job]) if e.kind == "preview"]


async def test_a_client_reconnecting_mid_job_gets_exactly_the_remaining_events(
    base: str, svc: LedgerService, worker: None
) -> None:
    job = await _submit(svc, steps=20)
    url = f"ws://{base}/jobs/{job}/events?previews=none"
    first = await asyncio.wait_for(_collect(url, stop_after="progress"), 30)
    cursor = first[-1]["seq"]
    assert first[-1]["step"] < 20, "the job must still be running when the client hangs up"
    rest = await asyncio.wait_for(_collect(f"{url}&after={cursor}"), 30)
    assert rest[0]["type"] == "status" and rest[-1]["type"] == "done"
    stored = [e.seq for e in await svc.events.read([job]) if e.kind != "preview"]
    seen = [m["seq"] for m in first + rest if m["seq"] is not None]
    assert seen == stored, "every stored event exactly once, in order, across the reconnect"
    assert not [m for m in first + rest if m["type"] == "preview"]
    assert [m["step"] for m in rest if m["type"] == "progress"][-1] == 20


async def test_a_finished_job_replays_and_ends_at_once(base: str, svc: LedgerService, worker: None) -> None:
    job = await _submit(svc, steps=3)
    await svc.wait([job], timeout=30)
    messages = await asyncio.wait_for(_collect(f"ws://{base}/jobs/{job}/events"), 10)
    assert messages[0]["status"] == "succeeded" and [m["type"] for m in messages][-1] == "done"
    assert [m["step"] for m in messages if m["type"] == "progress"][-1] == 3


async def test_unknown_job_closes_with_a_reason(base: str) -> None:
    async with websockets.connect(f"ws://{base}/jobs/00000000-0000-4000-8000-000000000000/events") as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == NOT_FOUND_CLOSE
    assert "no job" in closed.value.rcvd.reason


async def test_a_cancelled_job_ends_with_cancelled(base: str, svc: LedgerService) -> None:
    job = await _submit(svc)
    await svc.cancel(job)
    messages = await asyncio.wait_for(_collect(f"ws://{base}/jobs/{job}/events"), 10)
    assert messages[-1]["type"] == "cancelled" and messages[-1]["status"] == "cancelled"
