"""`langgraph dev` in accounts mode: graphs/server_auth.py knows the caller, and users see only their own threads."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient

from atelier.tools.accounts.auth import Authenticator
from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.ledger.store import JobLedger
from atelier.tools.settings import load_settings
from tests.conftest import INSTALLED_MODELS
from tests.fakes.comfyui_server import FakeComfyUI
from tests.integration.test_langgraph_server import langgraph_dev
from tests.pg import MACHINE_ADMIN_URL, fresh_database

pytestmark = pytest.mark.timeout(240)
FOX: Any = {"messages": [{"role": "user", "content": "Generate a red fox in the snow"}], "owner": "bo"}


@dataclass(frozen=True)
class Accounts:
    """Made before the server starts: keys of ana, bo (users), root (admin), a revoked and a disabled one; a JWT."""

    ana: str
    bo: str
    root: str
    revoked: str
    disabled: str
    ana_token: str


async def _make_accounts(url: str, data_dir: Path) -> Accounts:
    """Users, keys (one revoked, one of a disabled user) and an access token for ana, in the server's database."""
    settings = load_settings(data_dir=data_dir, comfyui_urls="http://127.0.0.1:9", auth_mode="accounts")
    async with JobLedger.open(url) as ledger:
        directory = UserDirectory(ledger.pool)
        keys = {}
        for name in ("ana", "bo", "root"):
            await directory.create(name, role="admin" if name == "root" else "user")
            keys[name] = (await directory.create_key(name)).secret
        old = await directory.create_key("ana", "old laptop")
        await directory.revoke(old.key.prefix)
        await directory.create("cy")
        disabled = (await directory.create_key("cy")).secret
        await directory.update("cy", disabled=True)
        token, _ = await Authenticator(settings, directory).token_for(keys["ana"])
    return Accounts(ana=keys["ana"], bo=keys["bo"], root=keys["root"], revoked=old.secret, disabled=disabled,
                    ana_token=token)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL, shared by this module's one server."""
    with fresh_database(MACHINE_ADMIN_URL) as url:
        yield url


@pytest.fixture(scope="module")
def accounts(database: str, tmp_path_factory: pytest.TempPathFactory) -> Accounts:
    """ana, bo and root with their keys."""
    return asyncio.run(_make_accounts(database, tmp_path_factory.mktemp("accounts")))


@pytest.fixture(scope="module")
def server(database: str, accounts: Accounts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `langgraph dev` in accounts mode for the module (start-up takes seconds)."""
    folder = tmp_path_factory.mktemp("langgraph-auth")
    with FakeComfyUI(step_seconds=0.002, models=INSTALLED_MODELS, output_dir=folder / "comfyui") as comfy:
        env = {"DATABASE_URL": database, "ATELIER_AUTH": "accounts", "ATELIER_DATA_DIR": str(folder / "data"),
               "COMFYUI_URLS": comfy.url}
        with langgraph_dev(env, folder) as url:
            yield url


def _client(server: str, *, key: str | None = None, bearer: str | None = None) -> SyncLangGraphClient:
    """An SDK client sending an API key (X-API-Key) or `Authorization: Bearer` (never keys from the environment)."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
    return get_sync_client(url=server, api_key=key, headers=headers)


def _status(call: Callable[[], object]) -> int:
    """The HTTP status a refused SDK call failed with."""
    with pytest.raises(httpx.HTTPStatusError) as refused:
        call()
    return refused.value.response.status_code


def _tampered(token: str) -> str:
    """The token with its claims rewritten to say root/admin, the signature left as it was."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps(claims | {"sub": "root", "role": "admin"}).encode())
    return f"{header}.{forged.decode().rstrip('=')}.{signature}"


def test_requests_without_valid_credentials_are_refused_with_a_reason(server: str, accounts: Accounts) -> None:
    def search(**headers: str) -> httpx.Response:
        return httpx.post(f"{server}/threads/search", json={}, headers=headers, timeout=10)

    anonymous = search()
    assert anonymous.status_code == 401 and "needs credentials" in anonymous.json()["detail"]
    studio = search(**{"x-auth-scheme": "langsmith"})  # no Studio bypass (disable_studio_auth)
    assert studio.status_code == 401
    revoked = search(**{"X-API-Key": accounts.revoked})
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    disabled = search(**{"X-API-Key": accounts.disabled})
    assert disabled.status_code == 403 and "disabled" in disabled.json()["detail"]
    tampered = search(Authorization=f"Bearer {_tampered(accounts.ana_token)}")
    assert tampered.status_code == 401 and "signature" in tampered.json()["detail"]
    garbled = search(Authorization="Bearer not-a-token")
    assert garbled.status_code == 401 and "access token" in garbled.json()["detail"]
    assert search(Authorization=f"Bearer {accounts.ana_token}").status_code == 200
    assert search(**{"X-API-Key": accounts.ana}).status_code == 200


def test_users_see_only_their_own_threads_and_runs_are_owned_by_the_caller(server: str, accounts: Accounts,
                                                                           database: str) -> None:
    ana = _client(server, bearer=accounts.ana_token)  # a JWT
    bo = _client(server, bearer=accounts.bo)  # an API key as a bearer token
    root = _client(server, key=accounts.root)  # X-API-Key
    assert {a["graph_id"] for a in ana.assistants.search()} >= {"supervisor", "showcase", "generate"}

    thread = ana.threads.create(metadata={"owner": "bo", "topic": "foxes"})
    thread_id = thread["thread_id"]
    assert (thread["metadata"] or {})["owner"] == "ana"  # a user cannot create for someone else
    final = ana.runs.wait(thread_id, "supervisor", input=FOX)  # the input claims owner "bo"
    assert isinstance(final, dict) and final["messages"][-1]["content"].startswith("Queued 1 image(s)")
    assert final["owner"] == "ana"
    with psycopg.connect(database) as conn:
        owners = [row[0] for row in conn.execute("SELECT owner FROM jobs").fetchall()]
    assert owners == ["ana"]

    assert _status(lambda: bo.threads.get(thread_id)) == 404
    assert _status(lambda: bo.threads.get_state(thread_id)) == 404
    assert _status(lambda: bo.threads.update(thread_id, metadata={"owner": "bo"})) == 404
    assert _status(lambda: bo.runs.wait(thread_id, "supervisor", input=FOX)) == 404
    assert thread_id not in {t["thread_id"] for t in bo.threads.search(limit=100)}
    assert thread_id in {t["thread_id"] for t in ana.threads.search(limit=100)}

    seen = root.threads.get(thread_id)  # the admin sees everyone's
    assert (seen["metadata"] or {})["owner"] == "ana"
    assert thread_id in {t["thread_id"] for t in root.threads.search(limit=100)}
    state: Any = root.threads.get_state(thread_id)
    assert state["values"]["owner"] == "ana"


def test_assistants_and_the_store_are_per_user(server: str, accounts: Accounts) -> None:
    ana = _client(server, key=accounts.ana)
    bo = _client(server, key=accounts.bo)
    mine = bo.assistants.create("supervisor", name="bo's supervisor", metadata={"created_by": "system"})
    metadata = mine["metadata"] or {}
    assert metadata["owner"] == "bo" and "created_by" not in metadata
    assert mine["assistant_id"] not in {a["assistant_id"] for a in ana.assistants.search(limit=100)}
    assert _status(lambda: ana.assistants.get(mine["assistant_id"])) == 404
    assert mine["assistant_id"] in {a["assistant_id"] for a in bo.assistants.search(limit=100)}

    ana.store.put_item(["notes"], "plan", {"text": "foxes"})
    assert ana.store.get_item(["notes"], "plan")["value"] == {"text": "foxes"}
    assert bo.store.search_items(["notes"])["items"] == []
    assert bo.store.search_items(["ana", "notes"])["items"] == []  # even naming ana's namespace


def test_the_generate_graph_which_bypasses_the_ledger_is_for_admins(server: str, accounts: Accounts) -> None:
    ana = _client(server, key=accounts.ana)
    thread = ana.threads.create()
    params: Any = {"params": {"prompt": "a red fox", "seed": 1, "steps": 2}, "workflow": "txt2img-turbo"}
    refused: Any = ana.runs.wait(thread["thread_id"], "generate", input=params, raise_error=False)
    assert "is for admins" in json.dumps(refused) and "POST /jobs" in json.dumps(refused), refused
