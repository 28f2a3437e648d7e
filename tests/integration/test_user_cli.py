"""`atelier users …` on real PostgreSQL: the keys it prints work on the job API; quotas, disable and revoke bite."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from atelier.api.jobs import build_job_api
from atelier.cli.main import app
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import load_settings

KEY = re.compile(r"atl_[0-9a-f]{8}_\S+")


@pytest.fixture
def env(machine_pg_url: str, tmp_path: Path) -> dict[str, str]:
    """A fresh database in accounts mode; nothing listens for ComfyUI (jobs only queue)."""
    return {"DATABASE_URL": machine_pg_url, "COMFYUI_URLS": "http://127.0.0.1:9",
            "ATELIER_DATA_DIR": str(tmp_path / "d"), "ATELIER_AUTH": "accounts", "COLUMNS": "200"}


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    """The CLI in-process: (exit code, its output plus the message `atelier`'s main() would print for an error)."""
    result = CliRunner().invoke(app, list(args), env=env)
    said = str(result.exception) if isinstance(result.exception, AtelierError) else ""
    return result.exit_code, result.stdout + result.stderr + said


def status_with(env: dict[str, str], key: str) -> int:
    """The job API's answer to GET /jobs with this key, served on the same database."""
    settings = load_settings(database_url=env["DATABASE_URL"], comfyui_urls=env["COMFYUI_URLS"],
                             data_dir=Path(env["ATELIER_DATA_DIR"]), auth_mode="accounts")

    async def ask() -> int:
        async with LedgerService.open(settings, conninfo=env["DATABASE_URL"],
                                      store=LocalOutputStore(settings.data_dir / "out")) as svc:
            api = build_job_api(settings, service=svc)
            api.state.ledger = svc
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
                return (await http.get("/jobs", headers={"X-API-Key": key})).status_code

    return asyncio.run(ask())


def test_users_keys_quotas_disable_and_revoke_from_the_command_line(env: dict[str, str]) -> None:
    code, out = run(env, "users", "add", "ana", "--images-per-day", "1", "--tier", "priority")
    assert code == 0, out
    first_key = KEY.search(out)
    assert first_key and "shown once" in out and "priority" in out
    code, out = run(env, "users", "add", "root", "--admin", "--no-key")
    assert code == 0 and KEY.search(out) is None, out
    code, out = run(env, "users", "add", "Not Valid")
    assert code != 0 and "not a valid user name" in out

    code, out = run(env, "users", "list", "--json")
    listed = {u["id"]: u for u in json.loads(out)}
    assert listed["ana"]["quotas"]["images_per_day"] == 1 and listed["ana"]["priority"] == 10
    assert listed["root"]["role"] == "admin"

    assert status_with(env, first_key.group(0)) == 200
    # The quota holds for every front end, the CLI's submit included; the refusal names it.
    assert run(env, "submit", "a red fox", "--owner", "ana", "--workflow", "txt2img-turbo")[0] == 0
    code, out = run(env, "submit", "a grey wolf", "--owner", "ana", "--workflow", "txt2img-turbo")
    assert code != 0 and "images per day" in out.lower(), out
    code, out = run(env, "users", "quota", "ana", "--images-per-day", "-1")
    assert code == 0 and "∞" in out, out
    assert run(env, "submit", "a grey wolf", "--owner", "ana", "--workflow", "txt2img-turbo")[0] == 0

    code, out = run(env, "users", "key", "ana", "--label", "n8n")
    second_key = KEY.search(out)
    assert code == 0 and second_key, out
    code, out = run(env, "users", "keys", "ana")
    assert code == 0 and "n8n" in out and second_key.group(0) not in out and first_key.group(0) not in out
    prefix = second_key.group(0).split("_")[1]
    assert prefix in out

    code, out = run(env, "users", "revoke", prefix)
    assert code == 0 and "revoked" in out, out
    assert status_with(env, second_key.group(0)) == 401
    assert status_with(env, first_key.group(0)) == 200

    assert run(env, "users", "disable", "ana")[0] == 0
    assert status_with(env, first_key.group(0)) == 403
    assert run(env, "users", "enable", "ana")[0] == 0
    assert status_with(env, first_key.group(0)) == 200
