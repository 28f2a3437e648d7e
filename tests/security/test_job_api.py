"""Attacks on the job API's trust boundary over HTTP: other machines in local mode, other web pages, DNS rebinding,
input images named as server paths, and uploads that are not images (or are bombs).

Limits, templates and connections have their own modules (test_job_api_limits.py, test_job_api_prompts.py,
test_job_api_connections.py).
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from PIL import Image

from atelier.api.jobs import build_job_api
from atelier.tools.ledger.service import LedgerService
from atelier.tools.settings import Settings
from tests.security.conftest import Keys

pytestmark = pytest.mark.asyncio


def _png(size: tuple[int, int] = (32, 32), mode: str = "RGB") -> bytes:
    """A real PNG."""
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest_asyncio.fixture
async def remote_local(local_svc: LedgerService, local_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client on another machine (203.0.113.9) talking to a local-mode API."""
    api = build_job_api(local_settings, service=local_svc)
    api.state.ledger = local_svc
    transport = httpx.ASGITransport(app=api, client=("203.0.113.9", 51000))
    async with httpx.AsyncClient(transport=transport, base_url="http://192.0.2.1:8765") as http:
        yield http


async def test_local_mode_answers_only_its_own_machine(remote_local: httpx.AsyncClient) -> None:
    refused = await remote_local.post("/jobs", json={"params": {"prompt": "x"}})
    assert refused.status_code == 403 and "ATELIER_AUTH=accounts" in refused.json()["detail"]
    assert (await remote_local.get("/health")).status_code == 403


async def test_other_pages_and_rebinding_hosts_are_refused(local_api: httpx.AsyncClient) -> None:
    foreign = await local_api.post("/jobs", json={"params": {"prompt": "x"}}, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and "ATELIER_ALLOWED_ORIGINS" in foreign.json()["detail"]
    null_origin = await local_api.post("/jobs", json={"params": {"prompt": "x"}}, headers={"Origin": "null"})
    assert null_origin.status_code == 403
    preflight = await local_api.options("/jobs", headers={"Origin": "https://evil.example",
                                                          "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    rebound = await local_api.get("/jobs", headers={"Host": "evil.example"})
    assert rebound.status_code == 403 and "ATELIER_ALLOWED_HOSTS" in rebound.json()["detail"]
    same_origin = await local_api.get("/jobs", headers={"Origin": "http://127.0.0.1"})
    assert same_origin.status_code == 200


async def test_input_images_are_uploaded_bytes_never_server_paths(local_api: httpx.AsyncClient, tmp_path: Path,
                                                                  local_settings: Settings) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png())
    for name in (str(secret), "../secret.png", "..", "inputs/../../secret.png", "/etc/passwd"):
        refused = await local_api.post("/jobs", json={"params": {"prompt": "x", "input_image": name},
                                                      "workflow": "img2img"})
        assert refused.status_code == 422, (name, refused.text)
    not_image = await local_api.post("/inputs", content=b"#!/bin/sh\necho hi\n", headers={"content-type": "image/png"})
    assert not_image.status_code == 422 and "not an image" in not_image.json()["detail"]
    bomb = await local_api.post("/inputs", content=_png((9000, 9000), mode="1"), headers={"content-type": "image/png"})
    assert bomb.status_code == 422 and "ATELIER_MAX_IMAGE_PIXELS" in bomb.json()["detail"]
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    assert (await local_api.post("/inputs", content=gif.getvalue())).status_code == 422
    raw = await local_api.post("/inputs", content=_png(), headers={"content-type": "image/png"})
    form = await local_api.post("/inputs", files={"file": ("cat.png", _png(), "image/png")})
    assert raw.status_code == form.status_code == 201 and raw.json()["name"] == form.json()["name"]
    name = raw.json()["name"]
    assert (local_settings.data_dir / "inputs" / name).read_bytes() == _png()
    made = await local_api.post("/jobs", json={"params": {"prompt": "x", "input_image": name}, "workflow": "img2img"})
    assert made.status_code == 201 and made.json()["params"]["input_image"] == name


async def test_uploads_need_credentials_with_accounts(accounts_api: httpx.AsyncClient, keys: Keys) -> None:
    assert (await accounts_api.post("/inputs", content=_png())).status_code == 401
    assert (await accounts_api.post("/inputs", content=_png(), headers=keys.of("ana"))).status_code == 201


async def test_reserved_names_cannot_be_accounts(accounts_svc: LedgerService) -> None:
    from atelier.tools.accounts.directory import AccountError, UserDirectory

    directory = UserDirectory(accounts_svc.ledger.pool)
    for name in ("shared", "anonymous", "local", "api", "mcp"):
        with pytest.raises(AccountError, match="a name Atelier uses itself"):
            await directory.create(name)


async def test_the_result_cache_is_no_oracle_of_other_users_prompts(accounts_api: httpx.AsyncClient, keys: Keys,
                                                                    accounts_svc: LedgerService) -> None:
    job = {"params": {"prompt": "bo's secret product launch", "seed": 7}, "workflow": "txt2img-turbo"}
    made = await accounts_api.post("/jobs", json=job, headers=keys.of("bo"))
    assert made.status_code == 201
    # bo's job succeeds (as a worker would record it): its image is in the output store.
    stored = accounts_svc.store.put("jobs/bo.png", _png(), "image/png")
    async with accounts_svc.ledger.pool.connection() as conn:
        await conn.execute("UPDATE jobs SET status = 'succeeded', finished_at = now(), outputs = %s::jsonb "
                           "WHERE id = %s", (json.dumps([{"uri": stored.uri, "key": stored.key, "size": stored.size,
                                                          "sha256": stored.sha256, "node_id": "9",
                                                          "comfy_filename": "bo.png"}]), made.json()["id"]))
    again = await accounts_api.post("/jobs", json=job, headers=keys.of("bo"))
    assert again.status_code == 201 and again.json()["cached"] is True  # bo's own repeat is answered from cache
    guess = await accounts_api.post("/jobs", json=job, headers=keys.of("ana"))
    assert guess.status_code == 201 and guess.json()["cached"] is False and guess.json()["status"] == "queued"
