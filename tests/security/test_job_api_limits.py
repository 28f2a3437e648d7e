"""Limits that are limits, attacked through the job API (and the CLI's foreground `generate`).

Each test is one finding of issue 15 tried the way an attacker would: values past a workflow's or the server's
limits, quotas dodged with big batches or with jobs that fail or are cancelled after using the GPU, a job that
never ends, keys and priorities that broke the database, bodies past the caps. Worker tests run a real worker on
the fake ComfyUI, whose steps are slowed so that a job runs past a tiny time limit in a couple of seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from PIL import Image

from atelier.api.jobs import build_job_api
from atelier.cli.main import main as cli_main
from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.accounts.models import Quotas
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from atelier.tools.worker.worker import Worker, WorkerOptions
from tests.conftest import INSTALLED_MODELS
from tests.fakes.comfyui_server import FakeComfyUI
from tests.security.conftest import Keys

pytestmark = pytest.mark.asyncio


def _job(workflow: str = "txt2img", **params: Any) -> dict[str, Any]:
    """A POST /jobs body."""
    values = {"prompt": "a lighthouse at dusk", "seed": 1, **params}
    return {"workflow": workflow, "params": {key: value for key, value in values.items() if value is not None}}


async def _post(api: httpx.AsyncClient, keys: Keys, user: str, body: dict[str, Any]) -> httpx.Response:
    """POST /jobs as `user`."""
    return await api.post("/jobs", json=body, headers=keys.of(user))


async def _stored(api: httpx.AsyncClient, keys: Keys, user: str) -> list[dict[str, Any]]:
    """The jobs `user` has in the ledger."""
    answer = await api.get("/jobs", headers=keys.of(user))
    assert answer.status_code == 200, answer.text
    jobs: list[dict[str, Any]] = answer.json()
    return jobs


# ----------------------------------------------------------------------------- steps, sizes, batches


@pytest.mark.parametrize(("workflow", "params", "said"), [
    pytest.param("txt2img-hq", {"steps": 10000}, ["steps 10000", "at most 60", "max_steps", "Ask for 60 or fewer"],
                 id="steps-10000-on-hq"),
    pytest.param("txt2img", {"steps": 151}, ["steps 151", "at most 50"], id="steps-past-the-catalog"),
    pytest.param("txt2img", {"batch_size": 64}, ["batch_size 64", "at most 8", "ATELIER_MAX_BATCH_SIZE"],
                 id="batch-64"),
    pytest.param("txt2img-hq", {"batch_size": 5}, ["batch_size 5", "at most 4", "max_batch_size"],
                 id="batch-past-the-catalog"),
    pytest.param("txt2img-turbo", {"steps": 40}, ["steps 40", "(1..10)", "txt2img-turbo"], id="sidecar-limit"),
    pytest.param("txt2img", {"width": 4096, "height": 4096}, ["4096x4096", "768x768", "choose a smaller size"],
                 id="past-max-resolution"),
    pytest.param("txt2img", {"width": 514}, ["width 514 is not a multiple of 8", "use 512 or 520"],
                 id="width-off-multiple"),
    pytest.param("upscale", {"seed": None, "steps": 20}, ["has no input for steps"],
                 id="value-the-workflow-cannot-take"),
])
async def test_values_past_a_workflows_limits_are_a_422_before_anything_is_stored(
        accounts_api: httpx.AsyncClient, keys: Keys, workflow: str, params: dict[str, Any], said: list[str]) -> None:
    answer = await _post(accounts_api, keys, "ana", _job(workflow, **params))
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert all(part in detail for part in said), detail
    assert await _stored(accounts_api, keys, "ana") == []


async def test_the_servers_max_steps_lowers_every_workflows_limit(
        accounts_svc: LedgerService, accounts_settings: Settings, keys: Keys) -> None:
    settings = accounts_settings.model_copy(update={"max_steps": 30})
    service = LedgerService(accounts_svc.ledger, settings, accounts_svc.store)
    api = build_job_api(settings, service=service)
    api.state.ledger = service  # ASGITransport runs no lifespan
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
        refused = await _post(http, keys, "ana", _job("txt2img-hq", steps=40))
        allowed = await _post(http, keys, "ana", _job("txt2img-hq", steps=30))
    assert refused.status_code == 422 and "at most 30 (the server's ATELIER_MAX_STEPS)" in refused.json()["detail"]
    assert allowed.status_code == 201, allowed.text


async def test_a_batch_refuses_only_its_entries_past_the_limits(accounts_api: httpx.AsyncClient, keys: Keys) -> None:
    body = {"jobs": [_job(steps=20), _job("txt2img-hq", steps=10000), _job(batch_size=64), _job(seed=2)]}
    answer = await accounts_api.post("/batches", json=body, headers=keys.of("ana"))
    assert answer.status_code == 201, answer.text
    result = answer.json()
    assert [e["index"] for e in result["errors"]] == [1, 2] and len(result["jobs"]) == 2
    assert "steps 10000" in result["errors"][0]["detail"] and "batch_size 64" in result["errors"][1]["detail"]


async def test_the_foreground_generate_checks_the_same_limits(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COMFYUI_URLS", "http://127.0.0.1:9")  # never reached: the values are refused first
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as ended:  # in a thread: the CLI runs its own event loop
        await asyncio.to_thread(cli_main, ["generate", "a lighthouse", "--workflow", "txt2img-hq", "--steps", "10000"])
    err = capsys.readouterr().err
    assert ended.value.code != 0
    assert "steps 10000 is more than workflow 'txt2img-hq' allows: at most 60" in " ".join(err.split())
    assert "unreachable" not in err


async def test_a_batch_file_refuses_its_rows_past_the_limits_by_line(
        machine_pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {"DATABASE_URL": machine_pg_url, "COMFYUI_URLS": "http://127.0.0.1:9",
                        "ATELIER_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}.items():
        monkeypatch.setenv(name, value)
    sheet = tmp_path / "rows.csv"
    sheet.write_text("prompt,seed,steps,priority\nok,1,20,0\ntoo urgent,2,20,2147483647\ntoo long,3,10000,0\n"
                     "fine,4,20,5\n")
    with pytest.raises(SystemExit) as ended:
        await asyncio.to_thread(cli_main, ["batch", str(sheet)])
    err = " ".join(capsys.readouterr().err.split())
    assert ended.value.code == 1, err
    assert "line 3" in err and "priority 2147483647 is outside -1000..1000" in err
    assert "line 4" in err and "steps 10000" in err and "2 new job(s)" in err


# ----------------------------------------------------------------------------- quotas count images


async def test_images_per_day_counts_the_images_of_each_batch_not_jobs(
        accounts_api: httpx.AsyncClient, accounts_svc: LedgerService, keys: Keys) -> None:
    await UserDirectory(accounts_svc.ledger.pool).update("ana", quotas=Quotas(images_per_day=10))
    made = [await _post(accounts_api, keys, "ana", _job(batch_size=4, seed=seed)) for seed in (1, 2)]
    assert [m.status_code for m in made] == [201, 201]
    third = await _post(accounts_api, keys, "ana", _job(batch_size=4, seed=3))
    assert third.status_code == 429, third.text
    assert "images per day quota: 8 of 10 used" in third.json()["detail"]
    assert (await _post(accounts_api, keys, "ana", _job(batch_size=2, seed=4))).status_code == 201  # 10 of 10
    batch = await accounts_api.post("/batches", json={"jobs": [_job(seed=5)]}, headers=keys.of("ana"))
    assert batch.status_code == 201 and "images per day quota: 10 of 10" in batch.json()["errors"][0]["detail"]


# ----------------------------------------------------------------------------- keys and priorities


async def test_an_idempotency_key_past_200_characters_is_a_422_naming_the_limit(
        accounts_api: httpx.AsyncClient, keys: Keys) -> None:
    answer = await _post(accounts_api, keys, "ana", {**_job(), "idempotency_key": "k" * 3000})
    assert answer.status_code == 422, answer.text
    assert "3,000 characters long, more than the 200 allowed" in answer.json()["detail"]
    assert (await _post(accounts_api, keys, "ana", {**_job(), "idempotency_key": "k" * 200})).status_code == 201


async def test_a_batch_with_one_over_long_key_refuses_that_entry_only(
        accounts_api: httpx.AsyncClient, keys: Keys) -> None:
    body = {"jobs": [{**_job(seed=1), "idempotency_key": "a"}, {**_job(seed=2), "idempotency_key": "b" * 3000},
                     {**_job(seed=3), "idempotency_key": "c"}]}
    answer = await accounts_api.post("/batches", json=body, headers=keys.of("ana"))
    assert answer.status_code == 201, answer.text
    result = answer.json()
    assert [e["index"] for e in result["errors"]] == [1]
    assert "more than the 200 allowed" in result["errors"][0]["detail"]
    assert sorted(j["params"]["seed"] for j in result["jobs"]) == [1, 3]


@pytest.mark.parametrize("priority", [2**31 - 1, -(2**31), 1001, -1001])
async def test_a_priority_outside_its_range_is_a_422(accounts_api: httpx.AsyncClient, keys: Keys,
                                                     priority: int) -> None:
    answer = await _post(accounts_api, keys, "root", {**_job(), "priority": priority})
    assert answer.status_code == 422, answer.text
    assert await _stored(accounts_api, keys, "root") == []


async def test_the_highest_priority_an_admin_of_any_tier_may_ask_fits_the_ledger(
        accounts_api: httpx.AsyncClient, accounts_svc: LedgerService, keys: Keys) -> None:
    await UserDirectory(accounts_svc.ledger.pool).update("root", tier="priority")
    answer = await _post(accounts_api, keys, "root", {**_job(), "priority": 1000})
    assert answer.status_code == 201, answer.text
    assert answer.json()["priority"] == 1010


# ----------------------------------------------------------------------------- GPU time: charged, and limited


@dataclass
class Rig:
    """The accounts-mode job API with a worker on a slow fake ComfyUI."""

    api: httpx.AsyncClient
    svc: LedgerService
    fake: FakeComfyUI
    keys: Keys


@pytest.fixture
def slow_comfy(tmp_path: Path) -> Iterator[FakeComfyUI]:
    """A fake ComfyUI taking half a second a step: txt2img-turbo's 10 steps run 5 s."""
    with FakeComfyUI(step_seconds=0.5, models=INSTALLED_MODELS, output_dir=tmp_path / "comfyui") as fake:
        yield fake


@pytest_asyncio.fixture
async def rig(machine_pg_url: str, tmp_path: Path, slow_comfy: FakeComfyUI) -> AsyncIterator[Rig]:
    """Time limits tiny (the factor 1 × txt2img-turbo's 2 s estimate), ana and root with keys, a worker running."""
    settings = load_settings(data_dir=tmp_path / "data", comfyui_urls=slow_comfy.url, auth_mode="accounts",
                             job_time_factor=1, job_time_floor_seconds=1, comfyui_silence_seconds=2, lease_seconds=3)
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(tmp_path / "out")) as svc:
        directory = UserDirectory(svc.ledger.pool)
        secrets = {}
        for name in ("ana", "bo", "root"):
            await directory.create(name, role="admin" if name == "root" else "user")
            secrets[name] = (await directory.create_key(name)).secret
        api = build_job_api(settings, service=svc)
        api.state.ledger = svc  # ASGITransport runs no lifespan
        stop = asyncio.Event()
        worker = asyncio.create_task(
            Worker(svc.ledger, settings, svc.store, WorkerOptions(servers=[slow_comfy.url], lease_seconds=3)).run(stop))
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
                yield Rig(http, svc, slow_comfy, Keys(**secrets))
        finally:
            stop.set()
            await asyncio.wait_for(worker, 15)


async def _until(svc: LedgerService, job_id: str, kind: str) -> None:
    """Wait for the job's first event of this kind (its final event if it ends first)."""
    async for event in svc.events.follow([job_id]):
        if event.kind == kind or event.final:
            assert event.kind == kind, f"the job ended ({event.kind}) before a {kind} event"
            return


async def test_a_job_past_its_time_limit_is_interrupted_failed_and_its_gpu_time_charged(rig: Rig) -> None:
    await UserDirectory(rig.svc.ledger.pool).update("ana", quotas=Quotas(gpu_seconds_per_day=3))
    made = await _post(rig.api, rig.keys, "ana", _job("txt2img-turbo", steps=10))  # 5 s against a 2 s limit
    assert made.status_code == 201, made.text
    (done,) = await rig.svc.wait([made.json()["id"]], timeout=20)
    assert done.status == "failed" and done.error_kind == "time_limit"
    assert done.error is not None and "ran longer than its time limit of 2 s" in done.error
    assert "ATELIER_JOB_TIME_FACTOR" in done.error
    assert done.outputs == [] and done.gpu_seconds is not None and done.gpu_seconds >= 2
    interrupts = [body for method, path, body in rig.fake.requests if method == "POST" and path == "/interrupt"]
    assert interrupts == [{"prompt_id": done.prompt_id}]
    messages = [kind for kind, _ in rig.fake.history[done.prompt_id]["status"]["messages"]]
    assert "execution_interrupted" in messages and rig.fake.execution_counts[done.prompt_id] == 1
    # The 2 s and more it used count: with the next job's 2 s estimate, the 3 s a day are gone.
    again = await _post(rig.api, rig.keys, "ana", _job("txt2img-turbo", steps=1, seed=2))
    assert again.status_code == 429 and "gpu seconds per day quota" in again.json()["detail"]


async def test_a_cancelled_jobs_gpu_time_is_charged(rig: Rig) -> None:
    await UserDirectory(rig.svc.ledger.pool).update("bo", quotas=Quotas(gpu_seconds_per_day=2))  # one estimate
    made = await _post(rig.api, rig.keys, "bo", _job("txt2img-turbo", steps=10))
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    await _until(rig.svc, job_id, "progress")  # it is on the GPU
    cancelled = await rig.api.delete(f"/jobs/{job_id}", headers=rig.keys.of("bo"))
    assert cancelled.status_code == 200, cancelled.text
    (done,) = await rig.svc.wait([job_id], timeout=20)
    assert done.status == "cancelled" and done.gpu_seconds is not None and done.gpu_seconds > 0
    again = await _post(rig.api, rig.keys, "bo", _job("txt2img-turbo", steps=1, seed=2))
    assert again.status_code == 429 and "gpu seconds per day quota" in again.json()["detail"]


# ----------------------------------------------------------------------------- request body caps


@pytest.fixture
def capped_settings(tmp_path: Path) -> Settings:
    """Local mode with small caps: 4 KiB bodies, 64 KiB uploads."""
    return load_settings(data_dir=tmp_path / "data", comfyui_urls="http://127.0.0.1:9", auth_mode="local",
                         max_body_bytes=4096, max_upload_bytes=64 * 1024)


@pytest_asyncio.fixture
async def capped_api(local_svc: LedgerService, capped_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The local-mode job API with the small caps (in-process ASGI)."""
    api = build_job_api(capped_settings, service=local_svc)
    api.state.ledger = local_svc  # ASGITransport runs no lifespan
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
        yield http


class Source:
    """A request body that counts how much of it the server pulled."""

    def __init__(self, chunk: bytes, chunks: int) -> None:
        self.chunk, self.chunks, self.pulled = chunk, chunks, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Yield the chunks one by one, counting each."""
        for _ in range(self.chunks):
            self.pulled += 1
            yield self.chunk


def _noise_png(side: int) -> bytes:
    """A PNG that does not compress (random pixels): about 3·side² bytes."""
    data = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(3 * side * side)).save(data, "PNG")
    return data.getvalue()


@pytest.mark.parametrize("path", ["/jobs", "/inputs"])
async def test_a_declared_huge_body_is_a_413_and_is_never_read(capped_api: httpx.AsyncClient, path: str) -> None:
    body = Source(b"x" * 65536, 160_000)  # claims 10 GiB
    answer = await capped_api.post(path, content=body, headers={"content-length": str(10 * 2**30),
                                                                "content-type": "application/json"})
    assert answer.status_code == 413 and "request body is over" in answer.json()["detail"]
    assert body.pulled == 0


@pytest.mark.parametrize(("path", "kind", "limit"), [("/jobs", "application/json", 4096),
                                                      ("/inputs", "image/png", 64 * 1024)])
async def test_a_streamed_body_past_the_cap_is_a_413_and_reading_stops(
        capped_api: httpx.AsyncClient, path: str, kind: str, limit: int) -> None:
    body = Source(b"x" * 1024, 100_000)  # chunked: no length declared, 100 MB on offer
    answer = await capped_api.post(path, content=body, headers={"content-type": kind})
    assert answer.status_code == 413, answer.text
    assert f"over {limit:,} bytes" in answer.json()["detail"]
    assert body.pulled <= limit // 1024 + 2


async def test_inputs_take_an_image_bigger_than_a_jobs_body_up_to_their_own_cap(
        capped_api: httpx.AsyncClient) -> None:
    image = _noise_png(64)
    assert 4096 < len(image) < 64 * 1024
    stored = await capped_api.post("/inputs", content=image, headers={"content-type": "image/png"})
    assert stored.status_code == 201, stored.text
    assert stored.json()["bytes"] == len(image)
    as_job = await capped_api.post("/jobs", content=image, headers={"content-type": "application/json"})
    assert as_job.status_code == 413
    too_big = _noise_png(160)
    assert len(too_big) > 64 * 1024
    form = await capped_api.post("/inputs", files={"file": ("big.png", too_big, "image/png")})
    assert form.status_code == 413 and "over 65,536 bytes" in form.json()["detail"]


async def test_over_a_real_socket_a_declared_or_chunked_body_past_the_cap_gets_413(
        local_svc: LedgerService, capped_settings: Settings) -> None:
    server = uvicorn.Server(uvicorn.Config(build_job_api(capped_settings, service=local_svc), host="127.0.0.1",
                                           port=0, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        # Headers only, declaring 10 GiB: the answer comes without a byte of the body sent.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 10737418240\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 413"), head
        writer.close()
        # Chunked, without end: the 413 arrives once the cap is passed, and the server stops reading.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
        sent = 0
        answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
        while not answer.done() and sent < 10 * 2**20:
            with contextlib.suppress(ConnectionError):
                writer.write(chunk)
                await writer.drain()
            sent += 1024
            await asyncio.sleep(0)
        head = await asyncio.wait_for(answer, 10)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert sent < 1024 * 1024  # answered long before the client ran out of body
        writer.close()
    finally:
        server.should_exit = True
        await serving
