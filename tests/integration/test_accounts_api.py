"""Accounts through the job API: who is calling, isolation between users, refused credentials, quotas as 429."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from atelier.api.jobs import build_job_api
from atelier.tools.accounts.auth import jwt_secret
from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.accounts.models import Principal, Quotas
from atelier.tools.accounts.tokens import issue_token
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings

pytestmark = pytest.mark.asyncio
JOB = {"params": {"prompt": "a red fox", "seed": 1, "steps": 2}, "workflow": "txt2img-turbo"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Accounts mode, no ComfyUI needed (nothing runs)."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls="http://127.0.0.1:9", auth_mode="accounts")


@pytest_asyncio.fixture
async def svc(machine_pg_url: str, settings: Settings) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database."""
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "out")) as service:
        yield service


@pytest_asyncio.fixture
async def keys(svc: LedgerService) -> dict[str, str]:
    """API keys of ana and bo (users) and root (admin)."""
    directory = UserDirectory(svc.ledger.pool)
    made = {}
    for name, role in (("ana", "user"), ("bo", "user"), ("root", "admin")):
        await directory.create(name, role="admin" if role == "admin" else "user",
                               quotas=Quotas(images_per_day=3) if name == "bo" else None)
        made[name] = (await directory.create_key(name)).secret
    return made


@pytest_asyncio.fixture
async def client(svc: LedgerService, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the API (in-process ASGI)."""
    api = build_job_api(settings, service=svc)
    api.state.ledger = svc
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
        yield http


def _as(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def test_every_route_knows_the_caller_and_users_see_only_their_own(client: httpx.AsyncClient,
                                                                        keys: dict[str, str]) -> None:
    anonymous = await client.post("/jobs", json=JOB)
    assert anonymous.status_code == 401 and "needs credentials" in anonymous.json()["detail"]
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/jobs")).status_code == 401
    assert (await client.get("/prompts")).status_code == 401
    assert (await client.get("/health")).status_code == 200  # no one's data

    made = await client.post("/jobs", json=JOB, headers=_as(keys["ana"]))
    assert made.status_code == 201 and made.json()["owner"] == "ana"
    job = made.json()["id"]
    impostor = await client.post("/jobs", json={**JOB, "owner": "bo"}, headers=_as(keys["ana"]))
    assert impostor.status_code == 403 and "cannot act for 'bo'" in impostor.json()["detail"]
    for method, path, body in (("GET", f"/jobs/{job}", None), ("DELETE", f"/jobs/{job}", None),
                               ("GET", f"/jobs/{job}/images/0", None), ("POST", f"/jobs/{job}/rating", {"stars": 1}),
                               ("GET", f"/jobs/{job}/previews/1", None)):
        other = await client.request(method, path, json=body, headers=_as(keys["bo"]))
        assert other.status_code == 404, (method, path, other.text)
    # A short id (as `atelier jobs` shows them) resolves among the caller's own jobs only.
    assert (await client.get(f"/jobs/{job[:8]}", headers=_as(keys["ana"]))).json()["id"] == job
    assert (await client.get(f"/jobs/{job[:8]}", headers=_as(keys["bo"]))).status_code == 404
    assert [j["id"] for j in (await client.get("/jobs", headers=_as(keys["bo"]))).json()] == []
    # Idempotency keys are unique across the ledger: bo reusing ana's key is refused, never shown her job.
    keyed = {**JOB, "idempotency_key": "ana-launch-1"}
    first = await client.post("/jobs", json=keyed, headers=_as(keys["ana"]))
    assert (await client.post("/jobs", json=keyed, headers=_as(keys["ana"]))).json()["id"] == first.json()["id"]
    taken = await client.post("/jobs", json=keyed, headers=_as(keys["bo"]))
    assert taken.status_code == 409 and "another owner's job" in taken.json()["detail"], taken.text
    assert first.json()["id"] not in taken.text
    asked = await client.get("/jobs", params={"owner": "ana"}, headers=_as(keys["bo"]))
    assert asked.status_code == 403
    assert [j["id"] for j in (await client.get("/jobs", headers=_as(keys["ana"]))).json()] == [first.json()["id"], job]
    # An admin sees everyone's work and may act for others.
    assert (await client.get(f"/jobs/{job}", headers=_as(keys["root"]))).json()["owner"] == "ana"
    for_bo = await client.post("/jobs", json={**JOB, "owner": "bo", "params": {"prompt": "x", "seed": 2}},
                               headers=_as(keys["root"]))
    assert for_bo.json()["owner"] == "bo"
    # Prompt jobs and A/B jobs are the caller's too.
    await client.post("/prompts/hero/versions", json={"template": "{{ subject }}"}, headers=_as(keys["ana"]))
    by_prompt = await client.post("/prompts/hero/jobs", json={"values": {"subject": "a mug"}},
                                  headers=_as(keys["ana"]))
    assert by_prompt.json()["owner"] == "ana"
    me = await client.get("/auth/me", headers=_as(keys["bo"]))
    assert me.json() == {"user_id": "bo", "role": "user", "via": "api-key", "key_id": me.json()["key_id"],
                         "priority": 0}


async def test_tokens_expired_tampered_and_revoked_are_refused(client: httpx.AsyncClient, keys: dict[str, str],
                                                               svc: LedgerService) -> None:
    issued = await client.post("/auth/token", json={"api_key": keys["ana"]})
    assert issued.status_code == 200 and issued.json()["user"] == "ana" and issued.json()["expires_in"] == 3600
    bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    assert (await client.get("/jobs", headers=bearer)).status_code == 200
    head, payload, signature = issued.json()["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "role": "admin"}).encode()).decode().rstrip("=")
    refused = await client.get("/jobs", headers={"Authorization": f"Bearer {head}.{forged}.{signature}"})
    assert refused.status_code == 401 and "signature is not valid" in refused.json()["detail"]
    damaged = await client.get("/jobs", headers={"Authorization": f"Bearer {head}.{payload}.{signature[:-3]}x"})
    assert damaged.status_code == 401 and "damaged or was altered" in damaged.json()["detail"]
    secret = await jwt_secret(svc.settings, UserDirectory(svc.ledger.pool))
    old = issue_token(Principal(user_id="ana", role="user", via="token"), secret, ttl_seconds=60,
                      now=time.time() - 600)
    expired = await client.get("/jobs", headers={"Authorization": f"Bearer {old}"})
    assert expired.status_code == 401 and "has expired" in expired.json()["detail"]
    wrong = await client.post("/auth/token", json={"api_key": "atl_00000000_" + "x" * 43})
    assert wrong.status_code == 401 and "unknown or mistyped" in wrong.json()["detail"]
    prefix = keys["ana"].split("_")[1]
    await UserDirectory(svc.ledger.pool).revoke(prefix)
    for headers in (bearer, _as(keys["ana"])):
        revoked = await client.get("/jobs", headers=headers)
        assert revoked.status_code == 401 and "was revoked" in revoked.json()["detail"]
    await UserDirectory(svc.ledger.pool).update("bo", disabled=True)
    disabled = await client.get("/jobs", headers=_as(keys["bo"]))
    assert disabled.status_code == 403 and "is disabled" in disabled.json()["detail"]


async def test_a_quota_is_a_429_naming_it(client: httpx.AsyncClient, keys: dict[str, str]) -> None:
    for seed in range(3):
        ok = await client.post("/jobs", json={**JOB, "params": {"prompt": "p", "seed": seed}}, headers=_as(keys["bo"]))
        assert ok.status_code == 201
    full = await client.post("/jobs", json={**JOB, "params": {"prompt": "p", "seed": 9}}, headers=_as(keys["bo"]))
    assert full.status_code == 429
    assert full.json()["detail"].startswith("bo has reached the images per day quota: 3 of 3 used; it resets at")
    batch = await client.post("/batches", json={"jobs": [{**JOB, "params": {"prompt": "q", "seed": 1}}]},
                              headers=_as(keys["bo"]))
    assert batch.status_code == 201 and "images per day quota" in batch.json()["errors"][0]["detail"]


async def test_the_events_socket_needs_credentials_and_hides_other_users_jobs(
        svc: LedgerService, settings: Settings, keys: dict[str, str], machine_pg_url: str) -> None:
    # TestClient runs the app on a loop of its own: the app opens its ledger there (its lifespan), as a server does,
    # so the events socket's notifications live on the loop that serves it.
    own = settings.model_copy(update={"database_url": SecretStr(machine_pg_url)})
    api = build_job_api(own)
    with TestClient(api, base_url="http://127.0.0.1") as http:
        job = http.post("/jobs", json=JOB, headers=_as(keys["ana"])).json()["id"]
        with pytest.raises(WebSocketDisconnect) as anonymous, \
                http.websocket_connect(f"ws://127.0.0.1/jobs/{job}/events") as ws:
            ws.receive_json()
        assert anonymous.value.code == 4401 and "needs credentials" in anonymous.value.reason
        with pytest.raises(WebSocketDisconnect) as other, \
                http.websocket_connect(f"ws://127.0.0.1/jobs/{job}/events?access_token={keys['bo']}") as ws:
            ws.receive_json()
        assert other.value.code == 4404
        with http.websocket_connect(f"ws://127.0.0.1/jobs/{job}/events", headers=_as(keys["ana"])) as ws:
            first = ws.receive_json()
        assert first["type"] == "status" and first["status"] == "queued"
