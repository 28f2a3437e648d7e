"""The worker against the fake ComfyUI and the machine's PostgreSQL: run, recover, attach, cancel, route, measure."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from atelier.tools.comfyui.client import ComfyClient
from atelier.tools.comfyui.direct import resolve_workflow
from atelier.tools.ledger.models import Job, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.ledger.store import Claim
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings
from atelier.tools.worker.metrics import WorkerMetrics, serve_metrics
from atelier.tools.worker.worker import Worker, WorkerOptions
from tests.conftest import INSTALLED_MODELS
from tests.fakes.comfyui_server import FakeComfyUI

pytestmark = pytest.mark.asyncio


def make_settings(tmp_path: Path, *urls: str) -> Settings:
    """Settings for a worker test: the fakes' URLs, quick resync after silence."""
    return load_settings(data_dir=tmp_path / "data", comfyui_urls=",".join(urls), comfyui_silence_seconds=2,
                         comfyui_down_seconds=5, lease_seconds=3)


@pytest_asyncio.fixture
async def svc(machine_pg_url: str, tmp_path: Path, fake_comfy: FakeComfyUI) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database of the machine's PostgreSQL, outputs in a temporary folder."""
    settings = make_settings(tmp_path, fake_comfy.url)
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(tmp_path / "out")) as service:
        yield service


@contextlib.asynccontextmanager
async def running_worker(svc: LedgerService, *servers: str, **options: float) -> AsyncIterator[Worker]:
    """A worker running in this event loop until the block ends."""
    opts = WorkerOptions(servers=list(servers) or list(svc.settings.comfyui_urls),
                         lease_seconds=options.get("lease_seconds", 3.0),
                         idle_wake_seconds=options.get("idle_wake_seconds", 60.0))
    worker = Worker(svc.ledger, svc.settings, svc.store, opts)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def ask(prompt: str, seed: int = 1, **extra: object) -> JobRequest:
    """A small txt2img request with a fixed seed."""
    return JobRequest.model_validate({"params": GenerationParams(prompt=prompt, seed=seed, steps=3), **extra})


async def ghost_submits(svc: LedgerService, fake: FakeComfyUI, job: Job) -> Claim:
    """Play a worker that claimed the job, sent its prompt to ComfyUI, then died (its lease lapses)."""
    claim = await svc.ledger.claim("ghost", server=fake.url, vram_free_gb=100, known_servers=[fake.url],
                                   lease_seconds=30)
    assert claim is not None and claim.job.id == job.id
    template = resolve_workflow(job.workflow, svc.settings)
    from atelier.tools.comfyui.templates import render

    async with ComfyClient(fake.url) as comfy:
        await comfy.submit(render(template, job.generation), prompt_id=job.prompt_id)
    async with svc.ledger.pool.connection() as conn:
        await conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
                           (job.id,))
    return claim


async def test_jobs_run_once_each_and_their_images_are_stored(svc: LedgerService, fake_comfy: FakeComfyUI) -> None:
    jobs = [(await svc.submit(ask(f"cat {i}", seed=i))).job for i in range(6)]
    async with running_worker(svc):
        done = await svc.wait([j.id for j in jobs], timeout=30)
    assert [j.status for j in done] == ["succeeded"] * 6
    for job in done:
        assert len(job.outputs) == 1 and job.attempts == 1 and job.server == fake_comfy.url
        assert job.gpu_seconds is not None and job.gpu_seconds > 0 and job.actual_cost is not None
        assert job.started_at is not None and job.finished_at is not None
        data = svc.store.read(job.outputs[0].uri)
        assert data.startswith(b"\x89PNG") and len(data) == job.outputs[0].size
    assert {str(j.id): 1 for j in jobs} == dict(fake_comfy.execution_counts)


async def test_an_idle_worker_is_woken_by_a_new_job_not_by_its_timer(svc: LedgerService) -> None:
    async with running_worker(svc, idle_wake_seconds=600):
        await asyncio.sleep(0.3)  # the worker is idle now, its timer far away
        job = (await svc.submit(ask("woken"))).job
        (done,) = await svc.wait([job.id], timeout=20)
    assert done.status == "succeeded"


async def test_a_dead_workers_queued_prompt_is_attached_to_not_sent_again(
    svc: LedgerService, fake_comfy: FakeComfyUI
) -> None:
    fake_comfy.pause()
    job = (await svc.submit(ask("orphan"))).job
    await ghost_submits(svc, fake_comfy, job)
    async with running_worker(svc):
        await asyncio.sleep(0.5)
        fake_comfy.resume()
        (done,) = await svc.wait([job.id], timeout=30)
    assert done.status == "succeeded" and done.attempts == 2 and len(done.outputs) == 1
    assert fake_comfy.execution_counts[job.prompt_id] == 1


async def test_a_prompt_that_finished_after_its_worker_died_is_recorded_from_history(
    svc: LedgerService, fake_comfy: FakeComfyUI
) -> None:
    job = (await svc.submit(ask("finished alone"))).job
    await ghost_submits(svc, fake_comfy, job)
    async with httpx.AsyncClient() as http:  # wait until the fake has run it
        for _ in range(100):
            if (await http.get(f"{fake_comfy.url}/history/{job.prompt_id}")).json():
                break
            await asyncio.sleep(0.05)
    async with running_worker(svc):
        (done,) = await svc.wait([job.id], timeout=30)
    assert done.status == "succeeded" and len(done.outputs) == 1
    assert fake_comfy.execution_counts[job.prompt_id] == 1


async def test_a_comfyui_that_restarted_and_forgot_the_prompt_gets_it_once_more(
    svc: LedgerService, fake_comfy: FakeComfyUI
) -> None:
    fake_comfy.pause()
    job = (await svc.submit(ask("forgotten"))).job
    await ghost_submits(svc, fake_comfy, job)
    fake_comfy.restart()  # queue and history gone; the prompt never ran
    fake_comfy.resume()
    async with running_worker(svc):
        (done,) = await svc.wait([job.id], timeout=30)
    assert done.status == "succeeded"
    assert fake_comfy.execution_counts[job.prompt_id] == 1


async def test_a_validation_error_fails_at_once_without_retry(tmp_path: Path, machine_pg_url: str) -> None:
    with FakeComfyUI(step_seconds=0.002, models={}, output_dir=tmp_path / "bare") as bare:
        settings = make_settings(tmp_path, bare.url)
        async with LedgerService.open(settings, conninfo=machine_pg_url,
                                      store=LocalOutputStore(tmp_path / "out")) as svc:
            job = (await svc.submit(ask("no model"))).job
            async with running_worker(svc):
                (done,) = await svc.wait([job.id], timeout=20)
    assert done.status == "failed" and done.attempts == 1 and done.failures == 0
    assert done.error_kind == "ComfyValidationError" and "v1-5-pruned-emaonly.safetensors" in (done.error or "")


async def test_cancel_removes_a_prompt_waiting_inside_comfyui(svc: LedgerService, fake_comfy: FakeComfyUI) -> None:
    fake_comfy.pause()
    job = (await svc.submit(ask("never mind"))).job
    async with running_worker(svc):
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                queue = (await http.get(f"{fake_comfy.url}/queue")).json()
                if any(item[1] == job.prompt_id for item in queue["queue_pending"]):
                    break
                await asyncio.sleep(0.02)
            else:
                pytest.fail("the worker never queued the prompt in ComfyUI")
        await svc.cancel(job.id)
        (done,) = await svc.wait([job.id], timeout=20)
        fake_comfy.resume()
    assert done.status == "cancelled" and done.outputs == []
    assert fake_comfy.execution_counts[job.prompt_id] == 0


async def test_each_job_goes_to_a_server_whose_free_vram_fits_it(tmp_path: Path, machine_pg_url: str) -> None:
    gib = 2**30
    with (FakeComfyUI(step_seconds=0.002, models=INSTALLED_MODELS, output_dir=tmp_path / "small") as small,
          FakeComfyUI(step_seconds=0.002, models=INSTALLED_MODELS, output_dir=tmp_path / "big") as big):
        small.set_vram(5 * gib, 6 * gib)
        big.set_vram(20 * gib, 24 * gib)
        settings = make_settings(tmp_path, small.url, big.url)
        async with LedgerService.open(settings, conninfo=machine_pg_url,
                                      store=LocalOutputStore(tmp_path / "out")) as svc:
            heavy = [(await svc.submit(ask(f"hq {i}", workflow="txt2img-hq"))).job for i in range(4)]  # 8 GB
            async with running_worker(svc):
                done = await svc.wait([j.id for j in heavy], timeout=30)
    assert {j.server for j in done} == {big.url}
    assert not small.execution_counts


async def test_metrics_are_served_for_prometheus(svc: LedgerService) -> None:
    job = (await svc.submit(ask("measured"))).job
    metrics = WorkerMetrics()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve_metrics(metrics, svc.ledger, svc.settings, port)
    opts = WorkerOptions(servers=list(svc.settings.comfyui_urls), lease_seconds=3)
    worker = Worker(svc.ledger, svc.settings, svc.store, opts, metrics=metrics)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await svc.wait([job.id], timeout=20)
    await asyncio.sleep(1.2)  # at least one heartbeat (lease 3 s → every second)
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    stop.set()
    await task
    assert 'atelier_jobs{status="succeeded"} 1.0' in text
    assert "atelier_queue_depth 0.0" in text
    assert 'atelier_worker_jobs_total{status="succeeded"} 1.0' in text
    assert "atelier_workers_alive 1.0" in text and "atelier_worker_heartbeat_age_seconds{" in text
    assert f'atelier_owner_jobs{{owner="{job.owner}",status="succeeded"}} 1.0' in text
    assert "atelier_job_duration_seconds_count 1.0" in text
    assert "atelier_job_queue_wait_seconds_count 1.0" in text
    assert "atelier_gpu_seconds_total{server=" in text
    assert "atelier_comfyui_vram_free_bytes{server=" in text
    heartbeats = next(line for line in text.splitlines() if line.startswith("atelier_worker_heartbeats_total"))
    assert float(heartbeats.split()[-1]) >= 1
    assert "atelier_cache_hits_total 0.0" in text


async def test_cancel_interrupts_a_running_prompt(tmp_path: Path, machine_pg_url: str) -> None:
    with FakeComfyUI(step_seconds=0.2, models=INSTALLED_MODELS, output_dir=tmp_path / "slow") as slow:
        settings = make_settings(tmp_path, slow.url)
        async with LedgerService.open(settings, conninfo=machine_pg_url,
                                      store=LocalOutputStore(tmp_path / "out")) as svc:
            job = (await svc.submit(JobRequest(params=GenerationParams(prompt="long", seed=1, steps=50)))).job
            async with running_worker(svc):
                for _ in range(200):
                    if (await svc.get(job.id)).status == "running":
                        break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail("the job never started running")
                flagged = await svc.cancel(job.id)
                assert flagged.cancel_requested and flagged.status == "running"
                (done,) = await svc.wait([job.id], timeout=20)
        recorded = slow.history[job.prompt_id]["status"]
        assert recorded["status_str"] == "error"  # ComfyUI recorded the interruption
        assert slow.execution_counts[job.prompt_id] == 1
    assert done.status == "cancelled" and done.outputs == []
