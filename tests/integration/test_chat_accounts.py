"""The chat with accounts: login with a user name and API key; each person sees only their own work; admins all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psycopg
import pytest

from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from tests.chat_server import ServerThread, message_text
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama

pytestmark = pytest.mark.slow


def _settings(tmp_path: Path, comfy: str, ollama: str, pg_url: str) -> Settings:
    """Accounts mode on the fakes and a fresh database."""
    return load_settings(data_dir=tmp_path / "data", comfyui_urls=comfy, ollama_url=ollama, database_url=pg_url,
                         auth_mode="accounts")


def _make_users(settings: Settings, pg_url: str) -> dict[str, str]:
    """ana and bo (users), root (admin), each with an API key; the ledger migrates on the way."""

    async def make() -> dict[str, str]:
        async with LedgerService.open(settings, conninfo=pg_url,
                                      store=LocalOutputStore(settings.data_dir / "out")) as svc:
            directory = UserDirectory(svc.ledger.pool)
            keys = {}
            for name in ("ana", "bo", "root"):
                await directory.create(name, role="admin" if name == "root" else "user")
                keys[name] = (await directory.create_key(name)).secret
            return keys

    return asyncio.run(make())


def _set_disabled(settings: Settings, pg_url: str, user: str) -> None:
    """Disable a user, as `atelier users disable` does."""

    async def disable() -> None:
        async with LedgerService.open(settings, conninfo=pg_url,
                                      store=LocalOutputStore(settings.data_dir / "out")) as svc:
            await UserDirectory(svc.ledger.pool).update(user, disabled=True)

    asyncio.run(disable())


def test_each_person_sees_only_their_own_work_in_the_chat(
    fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, machine_pg_url: str, tmp_path: Path
) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError, AuthenticationError

    settings = _settings(tmp_path, fake_comfy.url, fake_ollama.url, machine_pg_url)
    keys = _make_users(settings, machine_pg_url)
    with ServerThread(settings, machine_pg_url) as url:
        # Login: a user name with one of their own keys; someone else's key or none is refused.
        for wrong in (keys["bo"], "atl_00000000_forged", ""):
            with pytest.raises((AuthenticationError, ValueError), match="Could not login"):
                Client(url, auth=("ana", wrong), verbose=False)
        config = httpx.get(url + "config", timeout=10)
        assert config.status_code == 401 or config.json().get("auth_required"), config.text[:200]

        ana = Client(url, auth=("ana", keys["ana"]), verbose=False, download_files=str(tmp_path / "ana"))
        history = ana.predict("draw a paper boat on a pond", [], "", "auto", "auto", api_name="/chat")[1]
        assert message_text(history[-1]).startswith("Done:"), history
        ana_jobs = ana.predict(api_name="/jobs")["data"]
        assert len(ana_jobs) == 1
        ana_job = ana_jobs[0][0]
        with psycopg.connect(machine_pg_url) as conn:
            owners = conn.execute("SELECT owner FROM jobs").fetchall()
            ana_thread = conn.execute("SELECT id, owner FROM chat_threads").fetchone()
        assert owners == [("ana",)], "the job belongs to the logged-in user"
        assert ana_thread is not None and ana_thread[1] == "ana"

        bo = Client(url, auth=("bo", keys["bo"]), verbose=False, download_files=str(tmp_path / "bo"))
        assert bo.predict(api_name="/jobs")["data"] == []
        for endpoint in ("/cancel_job", "/retry_job"):
            with pytest.raises(AppError, match="no job"):
                bo.predict(ana_job, api_name=endpoint)
        with pytest.raises(AppError, match="no conversation"):
            bo.predict(ana_thread[0], api_name="/open_conversation")
        images, note = bo.predict("paper boat", api_name="/search_images")
        assert images == [] or not any("paper boat" in str(item) for item in images), note

        # ana can open her conversation; the admin's queue shows everyone's jobs.
        opened = ana.predict(ana_thread[0], api_name="/open_conversation")
        assert any("paper boat" in message_text(m) for m in opened[0]), opened
        root = Client(url, auth=("root", keys["root"]), verbose=False)
        assert [row[0] for row in root.predict(api_name="/jobs")["data"]] == [ana_job]

        # A disabled account is refused at its next click, session or not.
        _set_disabled(settings, machine_pg_url, "bo")
        with pytest.raises(AppError, match="disabled"):
            bo.predict(api_name="/jobs")
        for client in (ana, bo, root):
            client.close()


def test_a_conversation_cannot_be_continued_or_resumed_by_another_owner(machine_pg_url: str, tmp_path: Path) -> None:
    from atelier.tools.conversations import ThreadDirectory
    from atelier.tools.errors import AtelierError

    settings = load_settings(data_dir=tmp_path / "data", comfyui_urls="http://127.0.0.1:9")

    async def check() -> None:
        async with LedgerService.open(settings, conninfo=machine_pg_url,
                                      store=LocalOutputStore(settings.data_dir / "out")) as svc:
            threads = ThreadDirectory(svc.ledger.pool)
            first = await threads.touch("t-1", "ana", "a quiet bedroom")
            again = await threads.touch("t-1", "ana", "and a lamp")
            assert again.title == first.title == "a quiet bedroom" and again.updated_at >= first.updated_at
            with pytest.raises(AtelierError, match="no conversation 't-1' of yours"):
                await threads.touch("t-1", "bo", "what did ana ask?")
            assert (await threads.get("t-1", "ana")) is not None and (await threads.get("t-1", "bo")) is None
            assert [t.id for t in await threads.recent("bo")] == []

    asyncio.run(check())
