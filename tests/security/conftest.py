"""Shared set-up of the attack tests: a fresh ledger, users with keys, and job API clients in both modes.

Each module in tests/security/ attacks one front end through its real surface (HTTP, `langgraph_sdk`, the MCP
client, `gradio_client`, the CLI); these fixtures only build what the attacks aim at.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from atelier.api.jobs import build_job_api
from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings


@dataclass(frozen=True)
class Keys:
    """API keys of two users (ana, bo) and an admin (root)."""

    ana: str
    bo: str
    root: str

    def of(self, name: str) -> dict[str, str]:
        """The request headers that present `name`'s key."""
        return {"X-API-Key": getattr(self, name)}


@pytest.fixture
def accounts_settings(tmp_path: Path) -> Settings:
    """Accounts mode on a fresh data folder; no ComfyUI needed (nothing runs unless a test starts one)."""
    return load_settings(data_dir=tmp_path / "data", comfyui_urls="http://127.0.0.1:9", auth_mode="accounts")


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    """Local mode (the default: no login) on a fresh data folder."""
    return load_settings(data_dir=tmp_path / "data", comfyui_urls="http://127.0.0.1:9", auth_mode="local")


@pytest_asyncio.fixture
async def accounts_svc(machine_pg_url: str, accounts_settings: Settings) -> AsyncIterator[LedgerService]:
    """The ledger of the accounts-mode server, on a fresh database."""
    async with LedgerService.open(accounts_settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(accounts_settings.data_dir / "out")) as service:
        yield service


@pytest_asyncio.fixture
async def keys(accounts_svc: LedgerService) -> Keys:
    """ana and bo (users) and root (admin), each with one API key."""
    directory = UserDirectory(accounts_svc.ledger.pool)
    made = {}
    for name in ("ana", "bo", "root"):
        await directory.create(name, role="admin" if name == "root" else "user")
        made[name] = (await directory.create_key(name)).secret
    return Keys(**made)


@pytest_asyncio.fixture
async def accounts_api(accounts_svc: LedgerService, accounts_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the accounts-mode job API (in-process ASGI, addressed as 127.0.0.1)."""
    api = build_job_api(accounts_settings, service=accounts_svc)
    api.state.ledger = accounts_svc
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
        yield http


@pytest_asyncio.fixture
async def local_svc(machine_pg_url: str, local_settings: Settings) -> AsyncIterator[LedgerService]:
    """The ledger of the local-mode server, on a fresh database."""
    async with LedgerService.open(local_settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(local_settings.data_dir / "out")) as service:
        yield service


@pytest_asyncio.fixture
async def local_api(local_svc: LedgerService, local_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the local-mode job API (in-process ASGI, addressed as 127.0.0.1)."""
    api = build_job_api(local_settings, service=local_svc)
    api.state.ledger = local_svc
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
        yield http
