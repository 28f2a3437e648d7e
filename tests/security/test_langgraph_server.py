"""Attacks on the LangGraph server (`langgraph dev` with langgraph.json), through `langgraph_sdk` and raw HTTP.

The findings of issue 15 this module covers: a run naming a server file and a service URL (the generate graph
uploaded `/some/secret.txt` to a listener); any web page driving the server (CORS `*` and private-network
preflights) or reaching it through DNS rebinding; and graph state trusted — `update_state(as_node=...)`,
`Command(update=..., goto=...)` and the run's input forging `owner` and `briefs` (workflow paths, input-image paths,
more images than a request may queue).
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk.client import SyncLangGraphClient
from langgraph_sdk.schema import Command

from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.ledger.store import JobLedger
from tests.conftest import INSTALLED_MODELS
from tests.fakes.comfyui_server import FakeComfyUI
from tests.integration.test_langgraph_server import langgraph_dev
from tests.pg import MACHINE_ADMIN_URL, fresh_database

pytestmark = pytest.mark.timeout(300)

FOREIGN = "https://foreign.example"


class Listener:
    """A loopback HTTP server that records every request it gets (an attacker's service URL)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        received = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self) -> None:
                size = int(self.headers.get("content-length") or 0)
                received.append((self.command, self.path, self.rfile.read(size) if size else b""))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"name": "secret.txt", "subfolder": "", "type": "input"}')

            do_GET = do_POST = _record

            def log_message(self, *args: Any) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        """Stop listening."""
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class Server:
    """A running `langgraph dev`, its database and its data folder."""

    url: str
    database: str
    data: Path


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`langgraph dev` in local mode (the default), with the fake ComfyUI."""
    folder = tmp_path_factory.mktemp("lg-local")
    with fresh_database(MACHINE_ADMIN_URL) as database, \
            FakeComfyUI(step_seconds=0.002, models=INSTALLED_MODELS, output_dir=folder / "comfyui") as comfy:
        env = {"DATABASE_URL": database, "ATELIER_AUTH": "local", "ATELIER_DATA_DIR": str(folder / "data"),
               "COMFYUI_URLS": comfy.url, "ATELIER_APPROVAL_COST": "100", "ATELIER_APPROVAL_GPU_SECONDS": "100000"}
        with langgraph_dev(env, folder) as url:
            yield Server(url, database, folder / "data")


async def _users(database: str) -> dict[str, str]:
    """ana and bo with an API key each, in the server's database."""
    async with JobLedger.open(database) as ledger:
        directory = UserDirectory(ledger.pool)
        keys = {}
        for name in ("ana", "bo"):
            await directory.create(name)
            keys[name] = (await directory.create_key(name)).secret
    return keys


@pytest.fixture(scope="module")
def accounts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """`langgraph dev` in accounts mode with users ana and bo."""
    folder = tmp_path_factory.mktemp("lg-accounts")
    with fresh_database(MACHINE_ADMIN_URL) as database, \
            FakeComfyUI(step_seconds=0.002, models=INSTALLED_MODELS, output_dir=folder / "comfyui") as comfy:
        keys = asyncio.run(_users(database))
        env = {"DATABASE_URL": database, "ATELIER_AUTH": "accounts", "ATELIER_DATA_DIR": str(folder / "data"),
               "COMFYUI_URLS": comfy.url, "ATELIER_APPROVAL_COST": "100", "ATELIER_APPROVAL_GPU_SECONDS": "100000"}
        with langgraph_dev(env, folder) as url:
            yield Server(url, database, folder / "data"), keys


def _jobs(database: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(owner, workflow, params) of every job, oldest first."""
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT owner, workflow, params FROM jobs ORDER BY created_at").fetchall()
    return [(str(owner), str(workflow), dict(params)) for owner, workflow, params in rows]


def _last_reply(state: Any) -> str:
    """The last message's text of a run's final state."""
    return str(state["messages"][-1]["content"])


def _ask(text: str, **extra: Any) -> Any:
    """A run's input: one user message (plus `extra` state keys)."""
    return {"messages": [{"role": "user", "content": text}], **extra}


def _brief(workflow: str = "txt2img-turbo", **params: Any) -> dict[str, Any]:
    """A designed image as the supervisor's state holds it (what an attacker writes into `briefs`)."""
    return {"brief": {"purpose": "illustration", "subject": "a fox"},
            "route": {"workflow": workflow, "reason": "forged", "seconds": 1.0, "cost": 0.0, "vram_gb": 0.0},
            "params": {"prompt": "a fox", "seed": 1, **params}, "style_used": []}


# --- a run that names a server file and a service URL ----------------------------------------------------------


def test_a_run_cannot_upload_a_server_file_to_a_url_it_names(local_server: Server, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the user's private notes")
    listener = Listener()
    try:
        client = get_sync_client(url=local_server.url)
        thread = client.threads.create()
        state: Any = client.runs.wait(
            thread["thread_id"], "generate", raise_error=False,
            input={"params": {"prompt": "x", "input_image": str(secret)}, "workflow": "img2img"},
            config={"configurable": {"comfy_url": listener.url, "out_dir": str(tmp_path / "stolen")}})
        assert "is a path on the server" in json.dumps(state), state
        named_file: Any = client.runs.wait(
            thread["thread_id"], "generate", raise_error=False,
            input={"params": {"prompt": "x"}, "workflow": str(tmp_path / "flow.json")},
            config={"configurable": {"comfy_url": listener.url}})
        assert "is a file path" in json.dumps(named_file), named_file
    finally:
        listener.close()
    assert listener.requests == [], "the server called the URL a run named"
    assert not (tmp_path / "stolen").exists()


# --- other web pages -----------------------------------------------------------------------------------------


def test_a_foreign_page_gets_no_cors_answer_and_cannot_call(local_server: Server) -> None:
    preflight = httpx.options(f"{local_server.url}/threads/search", headers={
        "Origin": FOREIGN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Private-Network": "true"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-private-network" not in preflight.headers
    simple = httpx.post(f"{local_server.url}/threads/search", json={}, headers={"Origin": FOREIGN})
    assert simple.status_code == 403 and "ATELIER_ALLOWED_ORIGINS" in simple.json()["detail"]
    jobs = httpx.post(f"{local_server.url}/jobs", json={"params": {"prompt": "x"}}, headers={"Origin": FOREIGN})
    assert jobs.status_code == 403
    own = httpx.post(f"{local_server.url}/threads/search", json={}, headers={"Origin": "http://127.0.0.1:7860"})
    assert own.status_code == 200 and own.headers["access-control-allow-origin"] == "http://127.0.0.1:7860"


def test_dns_rebinding_is_refused(local_server: Server) -> None:
    rebound = httpx.post(f"{local_server.url}/threads/search", json={}, headers={"Host": "attacker.example"})
    assert rebound.status_code == 403 and "ATELIER_ALLOWED_HOSTS" in rebound.json()["detail"]
    assert httpx.post(f"{local_server.url}/threads/search", json={},
                      headers={"Host": "localhost"}).status_code == 200


# --- graph state is derived, never trusted ---------------------------------------------------------------------


def test_local_mode_runs_act_for_the_local_user_whatever_the_input_says(local_server: Server) -> None:
    client = get_sync_client(url=local_server.url)
    thread = client.threads.create()
    forged = _ask("Generate a red fox", owner="bo")
    final: Any = client.runs.wait(thread["thread_id"], "supervisor", input=forged)
    assert _last_reply(final).startswith("Queued 1 image(s)") and final["owner"] == "local"
    assert [owner for owner, *_ in _jobs(local_server.database)][-1] == "local"


def _sdk(server: Server, key: str) -> SyncLangGraphClient:
    """An SDK client presenting an API key."""
    return get_sync_client(url=server.url, api_key=key)


def test_update_state_as_a_node_cannot_queue_for_another_user_or_name_files(
        accounts_server: tuple[Server, dict[str, str]], tmp_path: Path) -> None:
    server, keys = accounts_server
    ana = _sdk(server, keys["ana"])
    thread = ana.threads.create()["thread_id"]
    first: Any = ana.runs.wait(thread, "supervisor",
                               input=_ask("Generate a heron"))
    assert _last_reply(first).startswith("Queued 1 image(s)")
    before = len(_jobs(server.database))

    # Forge the owner and a plan naming a server file as input image, as if the designer and the approval had
    # run; then continue the thread so `submit` runs next.
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not really")
    steps = {"estimate": {"images": 1}, "decision": {"action": "approve"}, "trail": ["design", "approve"],
             "intent": "generate", "stopped": None}
    ana.threads.update_state(thread, {"owner": "bo", "briefs": [_brief("img2img", input_image=str(secret))], **steps},
                             as_node="approve")
    after: Any = ana.runs.wait(thread, "supervisor", input=None)
    assert "Queued 0 image(s)" in _last_reply(after) and "is a path on the server" in _last_reply(after), after
    # ... or a workflow by its file path.
    ana.threads.update_state(thread, {"briefs": [_brief(str(tmp_path / "evil.json"))], **steps}, as_node="approve")
    path: Any = ana.runs.wait(thread, "supervisor", input=None)
    assert "is a file path" in _last_reply(path), path
    assert len(_jobs(server.database)) == before

    # A well-formed forged plan is queued — for ana, the caller, never for bo (in a turn that queued nothing yet).
    fresh = ana.threads.create()["thread_id"]
    ana.runs.wait(fresh, "supervisor", input=_ask("What is a heron?"),
                  raise_error=False)
    ana.threads.update_state(fresh, {"owner": "bo", "briefs": [_brief(seed=77)], **steps}, as_node="approve")
    queued: Any = ana.runs.wait(fresh, "supervisor", input=None)
    assert _last_reply(queued).startswith("Queued 1 image(s)") and queued["owner"] == "ana"
    owner, workflow, params = _jobs(server.database)[-1]
    assert (owner, workflow, params["seed"]) == ("ana", "txt2img-turbo", 77)
    assert "bo" not in {owner for owner, *_ in _jobs(server.database)}


def test_a_command_that_jumps_to_submit_is_validated_and_owned_by_the_caller(
        accounts_server: tuple[Server, dict[str, str]]) -> None:
    server, keys = accounts_server
    bo = _sdk(server, keys["bo"])
    thread = bo.threads.create()["thread_id"]
    bo.runs.wait(thread, "supervisor", input=_ask("What is a heron?"),
                 raise_error=False)
    many: Command = {"update": {"owner": "ana", "briefs": [_brief(seed=i) for i in range(100)]}, "goto": "submit"}
    refused: Any = bo.runs.wait(thread, "supervisor", command=many, raise_error=False)
    assert "at most 16" in _last_reply(refused), refused
    one: Command = {"update": {"owner": "ana", "briefs": [_brief(seed=5, steps=4)]}, "goto": "submit"}
    done: Any = bo.runs.wait(thread, "supervisor", command=one)
    assert _last_reply(done).startswith("Queued 1 image(s)") and done["owner"] == "bo"
    owner, _, params = _jobs(server.database)[-1]
    assert owner == "bo" and params["seed"] == 5
    bad: Command = {"update": {"briefs": [{"route": {"workflow": "../../etc/passwd"}}]}, "goto": "submit"}
    broken: Any = bo.runs.wait(thread, "supervisor", command=bad, raise_error=False)
    assert "not valid" in _last_reply(broken)


def test_a_forged_owner_in_the_input_and_in_run_config_is_ignored(
        accounts_server: tuple[Server, dict[str, str]]) -> None:
    server, keys = accounts_server
    ana = _sdk(server, keys["ana"])
    thread = ana.threads.create()["thread_id"]
    final: Any = ana.runs.wait(thread, "supervisor",
                               input=_ask("Generate an owl", owner="bo"),
                               config={"configurable": {"owner": "bo", "langgraph_auth_user_id": "bo"}})
    assert final["owner"] == "ana"
    assert _jobs(server.database)[-1][0] == "ana"
    strange: Any = ana.runs.wait(thread, "supervisor", raise_error=False,
                                 input=_ask("Generate an owl"),
                                 config={"configurable": {"workflow": "/etc/flow.json", "target_seconds": "soon"}})
    assert "run option is not valid" in _last_reply(strange) or "file path" in _last_reply(strange), strange


async def _bo_publishes_a_hero_prompt_and_test(database: str) -> None:
    """bo, a user, saves a hero prompt and starts a hero A/B test (both theirs to use, nobody else's)."""
    from atelier.tools.prompts.abtests import ABTests
    from atelier.tools.prompts.library import PromptLibrary
    from atelier.tools.prompts.models import PromptDraft, VariantSpec

    async with JobLedger.open(database) as ledger:
        library = PromptLibrary(ledger.pool)
        await library.save(PromptDraft(name="bo-hero", template="{{ subject }}, BO-WAS-HERE", purpose="hero"), "bo")
        await library.save(PromptDraft(name="bo-hero-2", template="{{ subject }}, BO-TEST-ARM", purpose="hero"), "bo")
        await ABTests(ledger.pool).create("bo-heroes", [VariantSpec(label="a", prompt="bo-hero", version=1),
                                                         VariantSpec(label="b", prompt="bo-hero-2", version=1)],
                                          "bo", purpose="hero")


def test_another_users_prompts_and_tests_never_shape_your_images(
        accounts_server: tuple[Server, dict[str, str]]) -> None:
    server, keys = accounts_server
    asyncio.run(_bo_publishes_a_hero_prompt_and_test(server.database))
    ana, bo = _sdk(server, keys["ana"]), _sdk(server, keys["bo"])
    mine: Any = ana.runs.wait(ana.threads.create()["thread_id"], "supervisor",
                              input=_ask("Generate a hero image of a copper kettle"))
    theirs: Any = bo.runs.wait(bo.threads.create()["thread_id"], "supervisor",
                               input=_ask("Generate a hero image of a copper kettle"))
    assert _last_reply(mine).startswith("Queued 1") and _last_reply(theirs).startswith("Queued 1")
    prompts = {owner: params["prompt"] for owner, _, params in _jobs(server.database)[-2:]}
    assert "BO-" not in prompts["ana"], prompts
    assert "BO-" in prompts["bo"], prompts
