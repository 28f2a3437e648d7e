"""VRAM hot-swap and claim affinity: a real worker and PostgreSQL, fake ComfyUI and Ollama on shared fake GPUs."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from atelier.tools.ledger.models import Job, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings
from atelier.tools.worker.worker import Worker, WorkerOptions
from tests.conftest import INSTALLED_MODELS
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.fake_gpu import GIB, FakeGpu
from tests.fakes.ollama_models import FakeModel
from tests.fakes.ollama_server import FakeOllama

pytestmark = pytest.mark.asyncio

SD15 = "v1-5-pruned-emaonly.safetensors"  # txt2img: catalog 4 GB
SDXL = "sd_xl_base_1.0.safetensors"  # txt2img-hq: catalog 8 GB
MODEL_SIZES = {SD15: 2 * GIB, SDXL: int(6.5 * GIB)}
OLLAMA_MODELS = [
    FakeModel("llava", ["completion", "vision"], size=4 * GIB),
    FakeModel("llama3.2", ["completion", "tools"], size=2 * GIB),
    FakeModel("nomic-embed-text", ["embedding"], dims=768, size=1 * GIB),
    FakeModel("all-minilm", ["embedding"], size=GIB // 2),
]


def settings_for(tmp_path: Path, *urls: str, **extra: Any) -> Settings:
    """Worker settings for these fakes: Ollama's keep-alive as the fake's (300 s), idle after 60 s."""
    return load_settings(data_dir=tmp_path / "data", comfyui_urls=",".join(urls), comfyui_silence_seconds=2,
                         comfyui_down_seconds=5, lease_seconds=3, ollama_keep_alive_seconds=300,
                         hotswap_ollama_idle_seconds=60, **extra)


def ask(prompt: str, workflow: str, seed: int = 1) -> JobRequest:
    """A small request with a fixed seed."""
    return JobRequest(params=GenerationParams(prompt=prompt, seed=seed, steps=2), workflow=workflow)


@contextlib.asynccontextmanager
async def ledger(settings: Settings, pg_url: str, tmp_path: Path) -> AsyncIterator[LedgerService]:
    async with LedgerService.open(settings, conninfo=pg_url, store=LocalOutputStore(tmp_path / "out")) as service:
        yield service


@contextlib.asynccontextmanager
async def running_worker(svc: LedgerService, *servers: str, slots: int = 2) -> AsyncIterator[Worker]:
    """A worker in this event loop that re-reads VRAM before every claim."""
    options = WorkerOptions(servers=list(servers), slots_per_server=slots, lease_seconds=3.0,
                            idle_wake_seconds=60.0, vram_cache_seconds=0.0)
    worker = Worker(svc.ledger, svc.settings, svc.store, options)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 20.0) -> None:
    """Wait (bounded) until `check()` is true."""
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def prompt_index(fake: FakeComfyUI, job: Job) -> int:
    """Where the job's POST /prompt is in the fake's request log."""
    return next(i for i, (method, path, body) in enumerate(fake.requests)
                if method == "POST" and path == "/prompt" and isinstance(body, dict)
                and body.get("prompt_id") == job.prompt_id)


def frees(fake: FakeComfyUI) -> list[tuple[int, Any]]:
    """(index, body) of every POST /free."""
    return [(i, body) for i, (method, path, body) in enumerate(fake.requests) if method == "POST" and path == "/free"]


def keep_alive_zero(fake: FakeOllama) -> list[str]:
    """The models the fake Ollama was asked to unload (chat or generate with keep_alive 0 and nothing to do)."""
    return [str(body["model"]) for method, path, body in fake.requests
            if method == "POST" and path in ("/api/chat", "/api/generate") and isinstance(body, dict)
            and body.get("keep_alive") == 0]


@pytest.fixture
def gpu() -> FakeGpu:
    return FakeGpu(total=14 * GIB)


@pytest.fixture
def comfy(tmp_path: Path, gpu: FakeGpu) -> Iterator[FakeComfyUI]:
    with FakeComfyUI(step_seconds=0.002, models=INSTALLED_MODELS, output_dir=tmp_path / "comfyui", gpu=gpu,
                     model_sizes=MODEL_SIZES) as fake:
        yield fake


@pytest.fixture
def ollama(gpu: FakeGpu) -> Iterator[FakeOllama]:
    with FakeOllama(models=OLLAMA_MODELS, gpu=gpu, max_loaded_models=4) as fake:
        yield fake


@pytest_asyncio.fixture
async def svc(pg_url: str, tmp_path: Path, comfy: FakeComfyUI, ollama: FakeOllama) -> AsyncIterator[LedgerService]:
    async with ledger(settings_for(tmp_path, comfy.url, ollama_url=ollama.url), pg_url, tmp_path) as service:
        yield service


async def load_ollama_models(url: str) -> None:
    """llava and all-minilm idle for a while, llama3.2 just used, nomic-embed-text pinned (keep_alive -1).

    A model loaded with keep_alive 200 s expires 100 s sooner than one used just now under the server's
    300 s: exactly what /api/ps shows for a model last used 100 s ago.
    """
    async with httpx.AsyncClient(base_url=url) as http:
        for path, body in [
            ("/api/chat", {"model": "llava", "messages": [], "keep_alive": "200s"}),
            ("/api/chat", {"model": "llama3.2", "messages": []}),
            ("/api/embed", {"model": "nomic-embed-text", "input": [], "keep_alive": -1}),
            ("/api/embed", {"model": "all-minilm", "input": [], "keep_alive": "200s"}),
        ]:
            assert (await http.post(path, json=body)).status_code == 200


async def test_a_heavy_job_frees_comfyui_then_just_enough_idle_ollama_before_its_prompt_and_a_light_one_nothing(
    svc: LedgerService, comfy: FakeComfyUI, ollama: FakeOllama, gpu: FakeGpu
) -> None:
    await load_ollama_models(ollama.url)  # 7.5 GB of 14 in Ollama
    ollama.clear_requests()
    async with running_worker(svc, comfy.url) as worker:
        light = (await svc.submit(ask("a small fox", "txt2img"))).job  # 4 GB + 0.5 margin; 6.5 free
        (light,) = await svc.wait([light.id], timeout=30)
        assert light.status == "succeeded"
        assert frees(comfy) == [] and keep_alive_zero(ollama) == [], "a job that fits unloads nothing"

        heavy = (await svc.submit(ask("a detailed fox", "txt2img-hq"))).job  # 8 GB + 0.5; 4.5 free, SD 1.5 held
        (heavy,) = await svc.wait([heavy.id], timeout=30)
        assert heavy.status == "succeeded"
        ((free_at, body),) = frees(comfy)
        assert body == {"unload_models": True, "free_memory": True}
        assert free_at < prompt_index(comfy, heavy), "ComfyUI is freed before the heavy prompt is queued"
        # After /free 6.5 GB are free: 2 GB short. llava (4, idle) alone covers it; all-minilm (idle) is not
        # needed, llama3.2 (just used) and nomic-embed-text (pinned) are never candidates.
        assert keep_alive_zero(ollama) == ["llava:latest"]
        assert sorted(ollama.loaded_models) == ["all-minilm:latest", "llama3.2:latest", "nomic-embed-text:latest"]
        events = {(e.holder, e.action, e.model): e for e in gpu.events}
        run = events[("comfyui", "run", heavy.prompt_id)]
        assert events[("ollama", "unload", "llava:latest")].at < run.at
        assert run.free >= int(8.5 * GIB), "the heavy prompt started with the room it needs"

        again = (await svc.submit(ask("another detailed fox", "txt2img-hq", seed=2))).job
        (again,) = await svc.wait([again.id], timeout=30)
        assert again.status == "succeeded"
        assert len(frees(comfy)) == 1 and keep_alive_zero(ollama) == ["llava:latest"], "its model is loaded"
        unloads = {target: worker.metrics.registry.get_sample_value("atelier_hotswap_unloads_total",
                                                                    {"target": target}) for target in
                   ("comfyui", "ollama")}
    assert unloads == {"comfyui": 1.0, "ollama": 1.0}
    vram = [e for e in await svc.events.read([light.id, heavy.id, again.id]) if e.kind == "vram"]
    assert [e.job_id for e in vram] == [str(heavy.id)]
    assert [(u["target"], u["name"], u["done"]) for u in vram[0].data["unloaded"]] == [
        ("comfyui", "all models", True), ("ollama", "llava:latest", True)]
    assert vram[0].data["free_before_gb"] == pytest.approx(4.5) and vram[0].data["short_gb"] == 0
    assert heavy.models == [f"checkpoints/{SDXL}"] and light.models == [f"checkpoints/{SD15}"]


async def test_with_ollama_down_a_heavy_job_still_runs_after_freeing_comfyui(
    svc: LedgerService, comfy: FakeComfyUI, ollama: FakeOllama, gpu: FakeGpu
) -> None:
    ollama.go_down()
    gpu.total = 10 * GIB  # after SD 1.5 (2 GB) 8 are free, 0.5 short of SDXL's 8 + 0.5: only /free can help
    async with running_worker(svc, comfy.url):
        light = (await svc.submit(ask("a small fox", "txt2img"))).job
        (light,) = await svc.wait([light.id], timeout=30)
        heavy = (await svc.submit(ask("a detailed fox", "txt2img-hq"))).job
        (heavy,) = await svc.wait([heavy.id], timeout=30)
    assert (light.status, heavy.status) == ("succeeded", "succeeded")
    ((free_at, _body),) = frees(comfy)
    assert free_at < prompt_index(comfy, heavy) and keep_alive_zero(ollama) == []
    (vram,) = [e for e in await svc.events.read([heavy.id]) if e.kind == "vram"]
    assert f"Ollama at {ollama.url} is unreachable" in vram.data["note"] and vram.data["short_gb"] == 0


async def test_each_server_takes_the_jobs_for_the_models_it_has_loaded_first(pg_url: str, tmp_path: Path) -> None:
    gpu_a, gpu_b = FakeGpu(total=6 * GIB), FakeGpu(total=24 * GIB)
    with (FakeComfyUI(step_seconds=0.002, models=INSTALLED_MODELS, output_dir=tmp_path / "a", gpu=gpu_a,
                      model_sizes=MODEL_SIZES) as a,
          FakeComfyUI(step_seconds=0.002, models=INSTALLED_MODELS, output_dir=tmp_path / "b", gpu=gpu_b,
                      model_sizes=MODEL_SIZES) as b):
        settings = settings_for(tmp_path, a.url, b.url, ollama_gpu_peers="none")
        async with ledger(settings, pg_url, tmp_path) as svc, running_worker(svc, a.url, b.url, slots=1):
            # Warm up: SDXL can only go to B (A's 6 GB card is too small); SD 1.5 then goes to A while B's one
            # slot is held by the SDXL prompt waiting in B's paused queue.
            b.pause()
            xl = (await svc.submit(ask("warm xl", "txt2img-hq"))).job

            async def xl_queued() -> bool:
                return any(path == "/prompt" for _, path, _ in b.requests)

            await until(xl_queued, "the SDXL prompt to reach B")
            sd = (await svc.submit(ask("warm sd", "txt2img"))).job
            (sd,) = await svc.wait([sd.id], timeout=30)
            b.resume()
            (xl,) = await svc.wait([xl.id], timeout=30)
            assert (sd.server, xl.server) == (a.url, b.url)
            gpu_a.total = 24 * GIB  # from now on either server can take either job

            outcomes = await svc.submit_many([ask("xl again", "txt2img-hq", seed=3), ask("sd again", "txt2img", 3)])
            jobs = [o.job for o in outcomes if not isinstance(o, Exception)]
            done = {j.workflow: j for j in await svc.wait([j.id for j in jobs], timeout=30)}
    assert done["txt2img"].server == a.url and done["txt2img-hq"].server == b.url
    assert "/free" not in {path for _, path, _ in a.requests + b.requests}


# --- the claim's affinity in SQL ----------------------------------------------------------------------------------

SERVER = "http://gpu-1:8188"


@pytest_asyncio.fixture
async def bare(pg_url: str, tmp_path: Path) -> AsyncIterator[LedgerService]:
    async with ledger(load_settings(data_dir=tmp_path / "data", comfyui_urls=SERVER), pg_url, tmp_path) as service:
        yield service


async def claim_id(svc: LedgerService, models: list[str], *, vram: float = 24.0, affinity: float = 60.0
                   ) -> uuid.UUID | None:
    claim = await svc.ledger.claim("w", server=SERVER, vram_free_gb=vram, known_servers=[SERVER],
                                   lease_seconds=30, models=models, affinity_seconds=affinity)
    return None if claim is None else claim.job.id


async def test_a_claim_prefers_a_job_whose_models_are_loaded_within_its_priority(bare: LedgerService) -> None:
    sd = (await bare.submit(ask("sd", "txt2img"))).job
    xl = (await bare.submit(ask("xl", "txt2img-hq"))).job
    assert xl.models == [f"checkpoints/{SDXL}"]
    assert await claim_id(bare, [f"checkpoints/{SDXL}", "loras/x.safetensors"]) == xl.id
    assert await claim_id(bare, [f"checkpoints/{SDXL}"]) == sd.id, "nothing affine left: queue order"


async def test_affinity_keeps_queue_order_when_off_unfit_outranked_or_the_head_waited_long(
    bare: LedgerService,
) -> None:
    xl_models = [f"checkpoints/{SDXL}"]
    sd = (await bare.submit(ask("sd", "txt2img"))).job
    xl = (await bare.submit(ask("xl", "txt2img-hq"))).job
    assert await claim_id(bare, xl_models, affinity=0) == sd.id, "0 seconds: strict order"
    sd2 = (await bare.submit(ask("sd2", "txt2img", seed=2))).job
    assert await claim_id(bare, xl_models, vram=6) == sd2.id, "the affine job does not fit"
    urgent = (await bare.submit(JobRequest(params=GenerationParams(prompt="u", seed=4, steps=2), priority=5))).job
    assert await claim_id(bare, xl_models) == urgent.id, "a higher priority first"
    sd3 = (await bare.submit(ask("sd3", "txt2img", seed=3))).job
    async with bare.ledger.pool.connection() as conn:
        await conn.execute("UPDATE jobs SET created_at = now() - interval '5 minutes' WHERE id = %s", (sd3.id,))
    assert await claim_id(bare, xl_models) == sd3.id, "the oldest job waited longer than the affinity allows"
    assert await claim_id(bare, xl_models) == xl.id
