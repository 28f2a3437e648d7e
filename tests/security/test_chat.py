"""Attacks on the Gradio chat (app.py) through its real surface: a chat server on a loopback port, driven with
`gradio_client` and plain HTTP as a foreign web page or a DNS-rebinding page would, and as a person whose API
key was revoked while logged in.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from atelier.cli.main import main as atelier
from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.accounts.keys import split_key
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from tests.chat_server import ServerThread

pytestmark = pytest.mark.slow

FOREIGN = "https://foreign.example"
SECRET = "hunter2-doctor"


def _settings(tmp_path: Path, pg_url: str, **extra: Any) -> Settings:
    """A chat on a fresh database; ComfyUI and Ollama on a closed port (nothing here needs them)."""
    chosen: dict[str, Any] = {"comfyui_urls": "http://127.0.0.1:9", "ollama_url": "http://127.0.0.1:9",
                              "database_url": pg_url, **extra}
    return load_settings(data_dir=tmp_path / "data", **chosen)


def _count(pg_url: str, table: str) -> int:
    """Rows in a ledger table."""
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0


def test_a_foreign_page_or_a_rebound_host_cannot_drive_the_chat(machine_pg_url: str, tmp_path: Path) -> None:
    from gradio_client import Client

    settings = _settings(tmp_path, machine_pg_url)  # local mode: whoever drives the page is the admin
    with ServerThread(settings, machine_pg_url, worker=False) as url:
        port = url.rstrip("/").rsplit(":", 1)[1]
        own = url.rstrip("/")
        rebound = {"Host": f"attacker.example:{port}"}
        with httpx.Client(base_url=url, timeout=30) as http:
            # A page on another origin posts to the chat's Gradio API, its queue and the job API under /api.
            preflight = {"Access-Control-Request-Method": "POST"}
            attacks: list[tuple[str, str, Any, dict[str, str]]] = [
                ("POST", "gradio_api/call/chat", {"data": ["draw my files", [], "", "auto", "auto"]}, {}),
                ("POST", "gradio_api/queue/join", {"data": [], "fn_index": 0, "session_hash": "x"}, {}),
                ("POST", "gradio_api/call/jobs", {"data": []}, {}),
                ("GET", "gradio_api/info", None, {}),
                ("GET", "config", None, {}),
                ("POST", "api/jobs", {"workflow": "txt2img", "params": {"prompt": "a fox"}}, {}),
                ("GET", "api/jobs", None, {}),
                ("OPTIONS", "api/jobs", None, preflight),
                ("OPTIONS", "gradio_api/queue/join", None, preflight),
            ]
            for method, path, body, extra in attacks:
                answer = http.request(method, path, json=body, headers={"Origin": FOREIGN, **extra})
                assert answer.status_code == 403, (method, path, answer.status_code, answer.text[:200])
                assert "ATELIER_ALLOWED_ORIGINS" in answer.json()["detail"]
                assert "access-control-allow-origin" not in answer.headers
                # A DNS-rebinding page reaches the same server under its own name: refused by Host.
                answer = http.request(method, path, json=body, headers={**rebound, **extra})
                assert answer.status_code == 403, (method, path, "rebound", answer.status_code)
                assert "ATELIER_ALLOWED_HOSTS" in answer.json()["detail"]
            assert _count(machine_pg_url, "jobs") == 0 and _count(machine_pg_url, "chat_threads") == 0

            # The official client, presenting either, cannot even read the page's API.
            for headers in ({"Origin": FOREIGN}, rebound):
                with pytest.raises(ValueError, match="Could not fetch config"):
                    Client(url, verbose=False, headers=headers)

            # The page's own origin (what the browser sends from the chat page) keeps working.
            same = http.post("gradio_api/call/jobs", json={"data": []}, headers={"Origin": own})
            assert same.status_code == 200 and "event_id" in same.json(), same.text[:200]
            assert http.get("api/jobs", headers={"Origin": own}).status_code == 200
        client = Client(url, verbose=False, headers={"Origin": own})
        assert client.predict(api_name="/jobs")["data"] == []
        client.close()


def _users(settings: Settings, pg_url: str) -> dict[str, str]:
    """ana with two API keys (one per device), made the way `atelier users` makes them."""

    async def make() -> dict[str, str]:
        async with LedgerService.open(settings, conninfo=pg_url,
                                      store=LocalOutputStore(settings.data_dir / "out")) as svc:
            directory = UserDirectory(svc.ledger.pool)
            await directory.create("ana")
            return {"laptop": (await directory.create_key("ana", "laptop")).secret,
                    "phone": (await directory.create_key("ana", "phone")).secret}

    return asyncio.run(make())


def test_a_revoked_key_ends_the_chat_session_it_logged_in(
    machine_pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError, AuthenticationError

    settings = _settings(tmp_path, machine_pg_url, auth_mode="accounts")
    keys = _users(settings, machine_pg_url)
    with ServerThread(settings, machine_pg_url, worker=False) as url:
        # The laptop sends its page's Origin, as the chat page in a browser does (same origin: allowed).
        laptop = Client(url, auth=("ana", keys["laptop"]), verbose=False, headers={"Origin": url.rstrip("/")})
        phone = Client(url, auth=("ana", keys["phone"]), verbose=False)
        assert laptop.predict(api_name="/jobs")["data"] == [] and phone.predict(api_name="/jobs")["data"] == []

        # The laptop is lost: an admin revokes its key with the CLI while its chat session is open.
        monkeypatch.setenv("DATABASE_URL", machine_pg_url)
        monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
        prefix = split_key(keys["laptop"])
        assert prefix is not None
        try:
            atelier(["users", "revoke", prefix])
        except SystemExit as done:
            assert not done.code, capsys.readouterr().err
        assert "revoked" in capsys.readouterr().out

        # Its next action is refused and says why; then the session is gone (Gradio asks it to log in), and
        # logging in again with that key is refused.
        with pytest.raises(AppError, match="revoked"):
            laptop.predict(api_name="/jobs")
        for endpoint in ("/jobs", "/services", "/new_conversation"):
            with pytest.raises(httpx.HTTPStatusError, match="401 Unauthorized"):
                laptop.predict(api_name=endpoint)
        with pytest.raises((AuthenticationError, ValueError), match="Could not login"):
            Client(url, auth=("ana", keys["laptop"]), verbose=False)
        # The session opened with her other key goes on.
        assert phone.predict(api_name="/jobs")["data"] == []
        phone.close()
        laptop.close()


def test_the_services_tab_shows_no_password(machine_pg_url: str, tmp_path: Path) -> None:
    from gradio_client import Client

    # The same database (a libpq key/value DSN) with a password: the machine's PostgreSQL trusts loopback, so the
    # password is ignored there, but it is what a real deployment's DATABASE_URL carries.
    with_password = f"{machine_pg_url} password={SECRET}"
    settings = _settings(tmp_path, machine_pg_url, database_url=with_password,
                         comfyui_urls=f"http://comfy:{SECRET}@127.0.0.1:9", ollama_url=f"http://ollama:{SECRET}@127.0.0.1:9")
    with ServerThread(settings, machine_pg_url, worker=False) as url:
        client = Client(url, verbose=False)
        rows = client.predict(api_name="/services")
        banner = client.predict(api_name="/service_banner")
        client.close()
    shown = str(rows) + str(banner)
    assert SECRET not in shown, shown
    services = {row[0]: row for row in rows["data"]}
    assert services["PostgreSQL"][1] == "ok" and "password=***" in services["PostgreSQL"][2]
    assert services["ComfyUI"][2] == "http://comfy:***@127.0.0.1:9" and "ComfyUI is not reachable" in banner
