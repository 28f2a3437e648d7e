"""Showcases through the job API with accounts: the caller's list, the manifest, the page (escaped, under a CSP
that lets it run nothing) and the zip; another owner's showcase is a 404; a gallery not made yet is a 409."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from atelier.api.jobs import build_job_api
from atelier.tools.accounts.directory import UserDirectory
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from atelier.tools.showcase.models import ShowcaseItem
from atelier.tools.showcase.store import ShowcaseStore
from tests.fakes.chat_model import ScriptedChatModel
from tests.fakes.comfyui_server import FakeComfyUI
from tests.showcases import COPY, HOSTILE, PLAN, config, make_showcase, running_worker

pytestmark = pytest.mark.asyncio

# Hostile text in every place a model or a person writes: the brief, a planned subject, a caption and the copy.
HOSTILE_PLAN = {"briefs": [{**PLAN["briefs"][0], "subject": '</title><script>alert(5)</script> "cup"'},
                           *PLAN["briefs"][1:]]}
HOSTILE_COPY = {"headline": "<h1 onclick=alert(6)>Copper</h1>", "images": [
    {**COPY["images"][0], "caption": "<script>alert(3)</script>"},
    {**COPY["images"][1], "marketing_copy": '"><img src=x onerror=alert(4)>'},
    *COPY["images"][2:]]}


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


@pytest.fixture
def settings(tmp_path: Path, fake_comfy: FakeComfyUI) -> Settings:
    """Accounts mode; approval needed for four images; the fake ComfyUI."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls=fake_comfy.url, auth_mode="accounts",
                         approval_cost=0.02, approval_gpu_seconds=60, lease_seconds=3)


@pytest_asyncio.fixture
async def svc(machine_pg_url: str, settings: Settings) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database."""
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "out")) as service:
        yield service


@pytest_asyncio.fixture
async def keys(svc: LedgerService) -> dict[str, str]:
    """API keys of ana and bo (users)."""
    directory = UserDirectory(svc.ledger.pool)
    made = {}
    for name in ("ana", "bo"):
        await directory.create(name, role="user")
        made[name] = (await directory.create_key(name)).secret
    return made


@pytest_asyncio.fixture
async def client(svc: LedgerService, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the API (in-process ASGI)."""
    api = build_job_api(settings, service=svc)
    api.state.ledger = svc
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
        yield http


async def _showcase(settings: Settings, svc: LedgerService) -> str:
    """Ana's showcase of the hostile brief, made through the graph; its id."""
    graph = make_showcase(settings, ScriptedChatModel(replies=[HOSTILE_PLAN, HOSTILE_COPY]), svc, InMemorySaver())
    await graph.ainvoke({"messages": [HumanMessage(HOSTILE)]}, config("hostile", "ana"))
    async with running_worker(svc):
        state = await graph.ainvoke(Command(resume={"action": "approve"}), config("hostile", "ana"))
    return str(state["showcase"]["id"])


def _as(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def test_the_owner_reads_the_manifest_page_and_zip_and_nobody_else_does(
    client: httpx.AsyncClient, keys: dict[str, str], settings: Settings, svc: LedgerService
) -> None:
    showcase_id = await _showcase(settings, svc)
    ana, bo = _as(keys["ana"]), _as(keys["bo"])

    listed = (await client.get("/showcases", headers=ana)).json()
    assert [s["id"] for s in listed] == [showcase_id] and listed[0]["status"] == "ready"
    assert listed[0]["images"] == listed[0]["planned"] == 4 and listed[0]["brief"] == HOSTILE
    assert listed[0]["page"] == f"http://127.0.0.1/showcases/{showcase_id}/page"
    assert (await client.get("/showcases", headers=bo)).json() == []
    assert (await client.get("/showcases")).status_code == 401

    one = (await client.get(f"/showcases/{showcase_id}", headers=ana)).json()
    manifest = one["manifest"]
    assert manifest["brief"] == HOSTILE and manifest["headline"] == HOSTILE_COPY["headline"]
    assert [item["caption"] for item in manifest["items"]][:1] == ["<script>alert(3)</script>"]
    assert all(item["seed"] is not None and item["workflow"] and item["prompt"] for item in one["items"])

    page = await client.get(f"/showcases/{showcase_id}/page", headers=ana)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'; img-src data:; style-src 'sha256-")
    assert "frame-ancestors 'none'" in policy and policy.endswith("sandbox")
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.text
    for raw in ("<script", "<img src=x", "<b>", "<a href", "<h1 onclick", "</title><script>"):
        assert raw not in html, f"{raw!r} reached the page unescaped"
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html and "&quot;&gt;&lt;img src=x" in html
    tags = _Tags()
    tags.feed(html)
    assert {tag for tag, _ in tags.tags} <= {"html", "head", "meta", "title", "style", "body", "header", "p", "h1",
                                             "main", "article", "img", "div", "h2", "details", "summary", "dl", "dt",
                                             "dd", "footer"}
    images = [attrs for tag, attrs in tags.tags if tag == "img"]
    assert len(images) == 4 and all(str(a["src"]).startswith("data:image/png;base64,") for a in images)
    assert all(set(attrs) <= {"src", "alt", "width", "height", "id", "class", "lang", "charset", "http-equiv",
                              "content", "name"} for _, attrs in tags.tags), "no event handler or link attribute"

    archive = await client.get(f"/showcases/{showcase_id}/zip", headers=ana)
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
    assert archive.headers["content-disposition"] == f'attachment; filename="showcase-{showcase_id[:8]}.zip"'
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert sorted(zipped.namelist()) == ["images/01-hero.png", "images/02-lifestyle.png", "images/03-detail.png",
                                             "images/04-thumbnail.png", "index.html", "manifest.json"]
        assert zipped.read("index.html").decode() == html
        assert json.loads(zipped.read("manifest.json")) == manifest
        assert all(zipped.read(name).startswith(b"\x89PNG") for name in manifest["files"]["images"])

    for path in (f"/showcases/{showcase_id}", f"/showcases/{showcase_id}/page", f"/showcases/{showcase_id}/zip"):
        theirs = await client.get(path, headers=bo)
        unknown = await client.get(path.replace(showcase_id, "00000000-0000-4000-8000-000000000000"), headers=bo)
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json()["detail"].replace(showcase_id, "X") == unknown.json()["detail"].replace(
            "00000000-0000-4000-8000-000000000000", "X"), "another owner's showcase looks like no showcase"
    assert (await client.get("/showcases/not-an-id", headers=ana)).status_code == 422

    # The stored page is lost: 410 naming it, not a 500.
    stored = await ShowcaseStore.for_service(svc).get(showcase_id, owner="ana")
    Path((stored.page_uri or "").removeprefix("file://")).unlink()
    gone = await client.get(f"/showcases/{showcase_id}/page", headers=ana)
    assert gone.status_code == 410 and "no longer in the output store" in gone.json()["detail"]


async def test_a_gallery_not_made_yet_is_a_409_saying_how_far_it_is(
    client: httpx.AsyncClient, keys: dict[str, str], svc: LedgerService
) -> None:
    item = ShowcaseItem(number=1, purpose="hero", subject="a cup", workflow="txt2img", prompt="a cup")
    started = await ShowcaseStore.for_service(svc).start(owner="ana", thread="t", turn="1", brief="a cup",
                                                         items=[item])
    view = (await client.get(f"/showcases/{started.id}", headers=_as(keys["ana"]))).json()
    assert view["status"] == "rendering" and view["manifest"] is None and view["page"] is None
    assert view["progress"] == {"stage": "images", "done": 0, "total": 1, "message": ""}
    early = await client.get(f"/showcases/{started.id}/zip", headers=_as(keys["ana"]))
    assert early.status_code == 409 and "has no gallery yet: it is rendering" in early.json()["detail"]


async def test_the_routes_are_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths: dict[str, Any] = (await client.get("/openapi.json")).json()["paths"]
    assert {"/showcases", "/showcases/{showcase_id}", "/showcases/{showcase_id}/page",
            "/showcases/{showcase_id}/zip"} <= set(paths)
    assert set(paths["/showcases/{showcase_id}/page"]["get"]["responses"]) >= {"200", "404", "409", "410"}
