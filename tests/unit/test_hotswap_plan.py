"""Hot-swap decisions (tools/gpu/plan.py) and the executor's calls against in-memory ComfyUI and Ollama stand-ins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from atelier.tools.comfyui.models import Device, QueueState, SystemStats
from atelier.tools.gpu.holdings import ComfyHoldings, Holdings, model_keys
from atelier.tools.gpu.hotswap import HotswapRecord, make_room
from atelier.tools.gpu.ollama_models import LoadedModel, OllamaModels, OllamaUnreachableError
from atelier.tools.gpu.plan import (
    GpuSnapshot,
    HotswapPolicy,
    claimable_gb,
    comfy_reclaimable_gb,
    ollama_use,
    pick_ollama,
    plan_hotswap,
)
from atelier.tools.gpu.room import host_key

GIB = 2**30
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
POLICY = HotswapPolicy(margin_gb=0.5, keep_alive_seconds=300, idle_seconds=60, settle_seconds=0.3,
                       unload_wait_seconds=0.3)
SDXL = frozenset({"checkpoints/sd_xl_base_1.0.safetensors"})
SD15 = frozenset({"checkpoints/v1-5-pruned-emaonly.safetensors"})


def llm(name: str, gb: float, *, idle_for: float | None = 600.0, expires_in: float | None = None) -> LoadedModel:
    """An Ollama model of `gb` GiB last used `idle_for` seconds ago (or expiring in `expires_in`)."""
    remaining = expires_in if expires_in is not None else 300 - (idle_for or 0)
    return LoadedModel(name, int(gb * GIB), int(gb * GIB), NOW + timedelta(seconds=remaining))


def snap(free: float, total: float = 12.0, holdings: Holdings | None = None, *models: LoadedModel) -> GpuSnapshot:
    return GpuSnapshot(free, total, holdings if holdings is not None else Holdings(since_free=frozenset()), models)


# --- what counts as idle ------------------------------------------------------------------------------------------


def test_idle_time_is_read_from_expires_at_and_the_keep_alive() -> None:
    assert ollama_use(llm("a", 1, idle_for=61), NOW, POLICY) == "idle"
    assert ollama_use(llm("a", 1, idle_for=59), NOW, POLICY) == "recent"
    assert ollama_use(llm("a", 1, idle_for=0), NOW, POLICY) == "recent", "loading or answering now"
    assert ollama_use(llm("a", 1, expires_in=292 * 365 * 86400), NOW, POLICY) == "pinned", "keep_alive -1"
    assert ollama_use(llm("a", 1, expires_in=3600), NOW, POLICY) == "pinned", "a longer keep_alive on purpose"
    assert ollama_use(LoadedModel("a", GIB, GIB, None), NOW, POLICY) == "unknown"


# --- the plan -----------------------------------------------------------------------------------------------------


def test_enough_free_vram_means_no_action() -> None:
    plan = plan_hotswap(snap(9.0, 12.0, None, llm("llava", 4)), 8.0, SDXL, NOW, POLICY)
    assert not plan.acts and plan.note == "enough free VRAM"
    assert not plan_hotswap(snap(1.0), 0.0, frozenset(), NOW, POLICY).acts, "a workflow without a VRAM need"


def test_short_frees_comfyuis_other_models_first_and_leaves_ollama_alone_when_that_suffices() -> None:
    # 12 GB card: ComfyUI holds SD 1.5 (4 GB beyond Ollama's 2), 6 GB free; SDXL needs 8 + 0.5.
    plan = plan_hotswap(snap(6.0, 12.0, Holdings(SD15, SD15), llm("llama3.2", 2)), 8.0, SDXL, NOW, POLICY)
    assert plan.free_comfyui and plan.unload_ollama == ()
    assert plan.expected_free_gb == pytest.approx(10.0)


def test_still_short_unloads_idle_ollama_models_largest_first_only_as_many_as_needed() -> None:
    models = (llm("small", 1), llm("mid", 2), llm("big", 3))
    plan = plan_hotswap(snap(2.0, 12.0, None, *models), 8.0, SDXL, NOW, POLICY)  # 6.5 short, none alone enough
    assert [m.name for m in plan.unload_ollama] == ["big", "mid", "small"] and not plan.free_comfyui
    plan = plan_hotswap(snap(4.0, 12.0, None, *models), 8.0, SDXL, NOW, POLICY)  # 4.5 short
    assert [m.name for m in plan.unload_ollama] == ["big", "mid"]


def test_when_one_model_alone_covers_the_rest_the_smallest_such_one_goes() -> None:
    models = (llm("huge", 6), llm("mid", 2.5), llm("small", 1))
    plan = plan_hotswap(snap(6.5, 16.0, None, *models), 8.0, SDXL, NOW, POLICY)  # 2 GB short
    assert [m.name for m in plan.unload_ollama] == ["mid"], "not the 6 GB model for a 2 GB shortfall"


def test_pinned_recent_and_unknown_models_are_kept() -> None:
    models = (llm("pinned", 6, expires_in=10**9), llm("chatting", 4, idle_for=5),
              LoadedModel("odd", 3 * GIB, 3 * GIB, None), llm("idle", 1))
    plan = plan_hotswap(snap(1.0, 16.0, None, *models), 8.0, SDXL, NOW, POLICY)
    assert [m.name for m in plan.unload_ollama] == ["idle"]
    assert plan.note.startswith("still") and plan.expected_free_gb == pytest.approx(2.0)
    allowed = HotswapPolicy(unload_pinned=True)
    plan = plan_hotswap(snap(1.0, 16.0, None, *models), 8.0, SDXL, NOW, allowed)
    assert [m.name for m in plan.unload_ollama] == ["idle", "pinned"], "pinned ones only after the idle ones"


def test_models_on_the_cpu_free_no_vram_and_are_not_unloaded() -> None:
    on_cpu = LoadedModel("cpu-only", 4 * GIB, 0, NOW)
    assert pick_ollama(4.0, [on_cpu], NOW, POLICY) == ()


def test_the_jobs_own_models_already_loaded_need_no_free() -> None:
    plan = plan_hotswap(snap(3.0, 12.0, Holdings(SDXL, SDXL)), 8.0, SDXL, NOW, POLICY)
    assert not plan.acts and plan.note == "the job's models are already loaded"


def test_unknown_holdings_count_as_reclaimable_and_are_freed() -> None:
    unknown = Holdings()
    assert comfy_reclaimable_gb(snap(3.0, 12.0, unknown, llm("a", 2))) == pytest.approx(7.0)
    assert plan_hotswap(snap(3.0, 12.0, unknown), 8.0, SDXL, NOW, POLICY).free_comfyui
    assert comfy_reclaimable_gb(snap(3.0, 12.0, Holdings(since_free=frozenset()))) == 0.0, "we freed it"


def test_a_job_bigger_than_the_gpu_unloads_nothing() -> None:
    plan = plan_hotswap(snap(1.0, 6.0, Holdings(), llm("a", 4)), 8.0, SDXL, NOW, POLICY)
    assert not plan.acts and "more than the GPU" in plan.note


def test_claimable_vram_counts_what_hot_swap_could_reclaim() -> None:
    models = (llm("idle", 3), llm("busy", 2, idle_for=1), llm("pinned", 1, expires_in=10**9))
    # 12 GB: 1 free, Ollama 6, ComfyUI holds 5 (unknown) → 1 + 5 + 3 idle.
    assert claimable_gb(snap(1.0, 12.0, Holdings(), *models), NOW, POLICY) == pytest.approx(9.0)
    assert claimable_gb(snap(1.0, 12.0, None, *models), NOW, POLICY) == pytest.approx(4.0), "ComfyUI freed"


def test_holdings_follow_runs_frees_and_forgetting() -> None:
    held = ComfyHoldings()
    assert held.get("s").since_free is None
    held.ran("s", SD15)
    assert held.get("s").last == SD15 and held.get("s").since_free is None, "still unknown what else it holds"
    held.freed("s")
    held.ran("s", SDXL)
    held.ran("s", SD15)
    assert held.get("s").last == SD15 and held.get("s").since_free == SD15 | SDXL
    held.forget("s")
    assert held.get("s") == Holdings()
    assert model_keys({"checkpoints": ["b.safetensors", "a.safetensors"], "loras": ["a.safetensors"]}) == (
        "checkpoints/a.safetensors", "checkpoints/b.safetensors", "loras/a.safetensors")


def test_same_host_treats_every_loopback_spelling_as_one() -> None:
    assert host_key("http://localhost:11434") == host_key("http://127.0.0.1:8188") == host_key("http://[::1]:8188")
    assert host_key("http://gpu-box:8188") != host_key("http://localhost:11434")


# --- the executor: the right calls in the right order -------------------------------------------------------------


class FakeComfyMemory:
    """ComfyUI's memory calls over a tiny GPU model: /free drops `held` GiB once the queue is idle."""

    def __init__(self, total: float, held: float, ollama: FakeOllamaMemory | None = None) -> None:
        self.total, self.held, self.ollama = total, held, ollama
        self.calls: list[str] = []

    def free_gb(self) -> float:
        return self.total - self.held - (self.ollama.held_gb() if self.ollama else 0.0)

    async def system_stats(self) -> SystemStats:
        self.calls.append("system_stats")
        device = Device(name="cuda:0", type="cuda", vram_total=int(self.total * GIB),
                        vram_free=int(self.free_gb() * GIB))
        return SystemStats(devices=[device])

    async def queue(self) -> QueueState:
        return QueueState()

    async def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        self.calls.append(f"free unload_models={unload_models} free_memory={free_memory}")
        self.held = 0.0


class FakeOllamaMemory:
    """Ollama's /api/ps and keep_alive 0 over a dict (name → GiB), recording every call in `calls`."""

    def __init__(self, models: dict[str, tuple[float, float]]) -> None:
        self.models = {name: llm(name, gb, idle_for=idle) for name, (gb, idle) in models.items()}
        self.calls: list[tuple[str, str, object]] = []

    def held_gb(self) -> float:
        return sum(m.vram_gb for m in self.models.values())

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            import json

            body = json.loads(request.content) if request.content else None
            self.calls.append((request.method, request.url.path, body))
            if request.url.path == "/api/ps":
                return httpx.Response(200, json={"models": [
                    {"name": m.name, "model": m.name, "size": m.size, "size_vram": m.size_vram,
                     "expires_at": m.expires_at.isoformat() if m.expires_at else None} for m in self.models.values()]})
            assert isinstance(body, dict) and body["messages"] == [] and body["keep_alive"] == 0
            self.models.pop(body["model"], None)
            return httpx.Response(200, json={"model": body["model"], "done": True, "done_reason": "unload"})

        return httpx.MockTransport(handle)


def unload_calls(ollama: FakeOllamaMemory) -> list[str]:
    return [str(body["model"]) for method, path, body in ollama.calls if path == "/api/chat" and isinstance(body, dict)]


def run_make_room(comfy: FakeComfyMemory, holdings: ComfyHoldings, ollama: OllamaModels | None, need: float
                  ) -> HotswapRecord:
    async def go() -> HotswapRecord:
        try:
            return await make_room(comfy, "http://127.0.0.1:8188", need, SDXL, holdings=holdings, ollama=ollama,
                                   policy=POLICY, clock=lambda: NOW)
        finally:
            if ollama is not None:
                await ollama.aclose()

    return asyncio.run(go())


def test_executor_frees_comfyui_then_the_idle_ollama_model_and_records_it() -> None:
    models = FakeOllamaMemory({"llava:latest": (4.0, 600), "llama3.2:latest": (2.0, 600), "chat:latest": (1.0, 5)})
    comfy = FakeComfyMemory(total=12.0, held=2.5, ollama=models)  # 12 − 2.5 − 7 = 2.5 free
    holdings = ComfyHoldings()
    holdings.freed("http://127.0.0.1:8188")
    holdings.ran("http://127.0.0.1:8188", SD15)
    ollama = OllamaModels("http://ollama.test", transport=models.transport())
    record = run_make_room(comfy, holdings, ollama, 8.0)
    assert comfy.calls.count("free unload_models=True free_memory=True") == 1
    assert unload_calls(models) == ["llava:latest"], "after /free 5 GB free: 3.5 short, llava alone covers it"
    assert [(u.target, u.name, u.done) for u in record.unloads] == [
        ("comfyui", "all models", True), ("ollama", "llava:latest", True)]
    assert record.free_before_gb == pytest.approx(2.5) and record.free_after_gb == pytest.approx(9.0)
    assert not record.short and record.as_event()["unloaded"][1]["vram_gb"] == 4.0
    assert holdings.get("http://127.0.0.1:8188").since_free == frozenset(), "ComfyUI holds nothing after /free"


def test_executor_does_nothing_when_vram_suffices() -> None:
    models = FakeOllamaMemory({"llava:latest": (4.0, 600)})
    comfy = FakeComfyMemory(total=24.0, held=2.0, ollama=models)
    record = run_make_room(comfy, ComfyHoldings(), OllamaModels("http://ollama.test", transport=models.transport()),
                           8.0)
    assert not record.acted and comfy.calls == ["system_stats"] and models.calls == []


def test_executor_with_ollama_down_frees_comfyui_only_and_says_why() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    comfy = FakeComfyMemory(total=12.0, held=6.0)  # 6 free; /free gives 12
    down = OllamaModels("http://127.0.0.1:9", transport=httpx.MockTransport(refuse))
    record = run_make_room(comfy, ComfyHoldings(), down, 8.0)
    assert [u.target for u in record.unloads] == ["comfyui"] and not record.short
    assert "Ollama at http://127.0.0.1:9 is unreachable" in record.note and "ollama serve" in record.note


def test_the_ollama_client_names_the_problem_and_the_fix() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def go() -> None:
        client = OllamaModels("http://127.0.0.1:9", transport=httpx.MockTransport(refuse))
        try:
            await client.loaded()
        finally:
            await client.aclose()

    with pytest.raises(OllamaUnreachableError, match="start it with `ollama serve` or fix OLLAMA_URL"):
        asyncio.run(go())


def test_which_comfyui_shares_ollamas_gpu_is_configurable() -> None:
    from atelier.tools.errors import SettingsError
    from atelier.tools.gpu.room import GpuRoom
    from atelier.tools.settings import load_settings

    def room(**values: object) -> GpuRoom:
        return GpuRoom(load_settings(ollama_url="http://localhost:11434", **values))

    auto = room()
    assert auto.shares_gpu("http://127.0.0.1:8188") and not auto.shares_gpu("http://gpu-box:8188")
    listed = room(ollama_gpu_peers=" http://gpu-box:8188/ ,http://other:8188")
    assert listed.shares_gpu("http://gpu-box:8188") and not listed.shares_gpu("http://127.0.0.1:8188")
    assert room(ollama_gpu_peers="NONE").ollama is None
    assert room(hotswap=False).ollama is None
    with pytest.raises(SettingsError, match="ATELIER_OLLAMA_GPU_PEERS"):
        load_settings(ollama_gpu_peers="gpu-box:8188")
