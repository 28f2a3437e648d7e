"""The job REST API on the machine's PostgreSQL: submit, read, list, cancel, images, batches, workflows, health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from atelier.api.jobs import build_job_api
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from atelier.tools.worker.worker import Worker, WorkerOptions
from tests.fakes.comfyui_server import FakeComfyUI

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(tmp_path: Path, fake_comfy: FakeComfyUI) -> Settings:
    """Settings pointing at the fake ComfyUI."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls=fake_comfy.url, lease_seconds=3)


@pytest_asyncio.fixture
async def svc(machine_pg_url: str, settings: Settings) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database."""
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "out")) as service:
        yield service


@pytest_asyncio.fixture
async def client(svc: LedgerService, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the API (in-process ASGI)."""
    api = build_job_api(settings, service=svc)
    api.state.ledger = svc
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
        yield http


async def test_submit_read_list_and_cancel(client: httpx.AsyncClient) -> None:
    made = await client.post("/jobs", json={"params": {"prompt": "a red fox", "seed": 1}, "owner": "n8n",
                                            "priority": 3})
    assert made.status_code == 201
    job = made.json()
    assert job["status"] == "queued" and job["owner"] == "n8n" and job["images"] == []
    assert (await client.get(f"/jobs/{job['id']}")).json()["params"]["prompt"] == "a red fox"
    listed = (await client.get("/jobs", params={"owner": "n8n", "status": "queued"})).json()
    assert [j["id"] for j in listed] == [job["id"]]
    cancelled = await client.delete(f"/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


async def test_clear_client_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/jobs/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404 and "no job" in missing.json()["detail"]
    invalid = await client.post("/jobs", json={"params": {"prompt": "", "steps": 0}})
    assert invalid.status_code == 422
    fields = {tuple(e["loc"][-1:]) for e in invalid.json()["detail"]}
    assert ("prompt",) in fields and ("steps",) in fields
    workflow = await client.post("/jobs", json={"params": {"prompt": "x"}, "workflow": "no-such-flow"})
    assert workflow.status_code == 422 and "no-such-flow" in workflow.json()["detail"]
    bad_status = await client.get("/jobs", params={"status": "done"})
    assert bad_status.status_code == 422


async def test_the_same_key_returns_the_same_job(client: httpx.AsyncClient) -> None:
    body = {"params": {"prompt": "owl", "seed": 2}, "idempotency_key": "n8n-run-7"}
    first, second = (await client.post("/jobs", json=body)).json(), (await client.post("/jobs", json=body)).json()
    assert first["id"] == second["id"]


async def test_images_are_served_by_atelier_after_a_worker_ran_the_job(
    client: httpx.AsyncClient, svc: LedgerService, settings: Settings
) -> None:
    job = (await client.post("/jobs", json={"params": {"prompt": "a kite", "seed": 3, "steps": 2}})).json()
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(svc.ledger, settings, svc.store, WorkerOptions(lease_seconds=3)).run(stop))
    await svc.wait([job["id"]], timeout=30)
    stop.set()
    await task
    done = (await client.get(f"/jobs/{job['id']}")).json()
    assert done["status"] == "succeeded" and done["images"] == [f"http://127.0.0.1/jobs/{job['id']}/images/0"]
    picture = await client.get(f"/jobs/{job['id']}/images/0")
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert picture.content.startswith(b"\x89PNG")
    beyond = await client.get(f"/jobs/{job['id']}/images/1")
    assert beyond.status_code == 404 and "has 1 image(s)" in beyond.json()["detail"]
    assert "ask for 0..0" in beyond.json()["detail"]
    # The stored file is gone (deleted by hand, or the store lost it): 410 naming the output, not a 500.
    uri = (await svc.get(job["id"])).outputs[0].uri
    Path(uri.removeprefix("file://")).unlink()
    gone = await client.get(f"/jobs/{job['id']}/images/0")
    assert gone.status_code == 410 and f"output {uri} does not exist" in gone.json()["detail"]


async def test_batches_report_bad_entries_by_index(client: httpx.AsyncClient) -> None:
    body = {"jobs": [{"params": {"prompt": "a"}}, {"params": {"prompt": "b"}, "workflow": "nope"},
                     {"params": {"prompt": "c"}}]}
    made = await client.post("/batches", json=body)
    assert made.status_code == 201
    result = made.json()
    assert [j["params"]["prompt"] for j in result["jobs"]] == ["a", "c"]
    assert [e["index"] for e in result["errors"]] == [1] and "nope" in result["errors"][0]["detail"]


async def test_workflows_health_and_openapi(client: httpx.AsyncClient) -> None:
    names = {w["name"] for w in (await client.get("/workflows")).json()}
    assert {"txt2img", "txt2img-hq", "upscale"} <= names
    health = (await client.get("/health")).json()
    assert health["status"] == "ok" and isinstance(health["jobs"], dict)
    spec = (await client.get("/openapi.json")).json()
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/images/{n}", "/batches", "/workflows", "/health"} <= set(
        spec["paths"])


async def test_callers_name_workflows_and_inputs_never_server_files(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    workflow_path = await client.post("/jobs", json={"params": {"prompt": "x"}, "workflow": "/etc/passwd.json"})
    assert workflow_path.status_code == 422 and "file path" in workflow_path.json()["detail"]
    image_path = await client.post("/jobs", json={"params": {"prompt": "x", "input_image": "/etc/hostname"},
                                                  "workflow": "img2img"})
    assert image_path.status_code == 422 and "is a path on the server" in image_path.json()["detail"]
    missing = await client.post("/jobs", json={"params": {"prompt": "x", "input_image": "cat.png"},
                                               "workflow": "img2img"})
    assert missing.status_code == 422 and "POST /inputs" in missing.json()["detail"]
    inputs = settings.data_dir / "inputs"
    inputs.mkdir(parents=True)
    (inputs / "cat.png").write_bytes(Path(__file__).read_bytes()[:64])
    made = await client.post("/jobs", json={"params": {"prompt": "x", "input_image": "cat.png"},
                                            "workflow": "img2img"})
    assert made.status_code == 201 and made.json()["params"]["input_image"] == "cat.png"
