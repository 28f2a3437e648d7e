"""The prompt library and A/B tests through the job API and the CLI, plus `atelier workflows --measured`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from atelier.api.jobs import build_job_api
from atelier.cli.main import app
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from tests.fakes.comfyui_server import FakeComfyUI


@pytest.fixture
def settings(tmp_path: Path, fake_comfy: FakeComfyUI) -> Settings:
    """Settings pointing at the fake ComfyUI."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls=fake_comfy.url, lease_seconds=3)


@pytest_asyncio.fixture
async def client(machine_pg_url: str, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the job API (in-process ASGI) over a fresh database."""
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "out")) as svc:
        api = build_job_api(settings, service=svc)
        api.state.ledger = svc
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
            yield http


@pytest.mark.asyncio
async def test_prompts_versions_render_and_jobs_over_the_api(client: httpx.AsyncClient) -> None:
    body = {"template": "{{ subject }}, {{ look }}, shot on {{ lens }}", "defaults": {"lens": "50mm"},
            "purpose": "hero", "tags": ["Studio"], "author": "n8n"}
    first = await client.post("/prompts/hero/versions", json=body)
    assert first.status_code == 201 and first.json()["version"]["version"] == 1
    again = await client.post("/prompts/hero/versions", json=body)
    assert again.status_code == 200 and again.json()["created"] is False
    second = await client.post("/prompts/hero/versions", json={**body, "defaults": {"lens": "85mm"}, "note": "longer"})
    assert second.status_code == 201 and second.json()["version"]["version"] == 2
    rendered = await client.post("/prompts/hero/render", json={"values": {"subject": "a kettle", "look": "studio"}})
    assert rendered.json() == {"ref": "hero@2", "text": "a kettle, studio, shot on 85mm", "negative": ""}
    missing = await client.post("/prompts/hero/render", json={"version": 1, "values": {}})
    assert missing.status_code == 422 and "needs a value for look, subject" in missing.json()["detail"]
    made = await client.post("/prompts/hero/jobs", json={"values": {"subject": "a kettle", "look": "studio"},
                                                         "params": {"seed": 4, "steps": 2}, "owner": "n8n"})
    assert made.status_code == 201 and made.json()["params"]["prompt"] == "a kettle, studio, shot on 85mm"
    versions = (await client.get("/prompts/hero/versions")).json()
    assert [(v["version"], v["stats"]["uses"], v["variables"]) for v in versions] == [
        (1, 0, ["lens", "look", "subject"]), (2, 1, ["lens", "look", "subject"])]
    listed = (await client.get("/prompts", params={"tag": "studio"})).json()
    assert [p["name"] for p in listed] == ["hero"]
    unknown = await client.get("/prompts/nope/versions/1")
    assert unknown.status_code == 404 and "no prompt named 'nope'" in unknown.json()["detail"]
    sandbox = await client.post("/prompts/evil/versions", json={"template": "{{ ''.__class__.__mro__ }}"})
    assert sandbox.status_code == 201  # it parses; rendering it is what the sandbox refuses
    refused = await client.post("/prompts/evil/render", json={})
    assert refused.status_code == 422 and "sandbox forbids" in refused.json()["detail"]
    bad_values = await client.post("/prompts/hero/jobs", json={"values": {"subject": "s", "look": "l"},
                                                               "params": {"steps": 0}})
    assert bad_values.status_code == 422 and "steps" in bad_values.json()["detail"]


@pytest.mark.asyncio
async def test_ab_tests_assign_by_key_collect_ratings_and_report(client: httpx.AsyncClient) -> None:
    await client.post("/prompts/hero/versions", json={"template": "{{ subject }}, soft light", "purpose": "hero"})
    await client.post("/prompts/hero/versions", json={"template": "{{ subject }}, hard light"})
    made = await client.post("/ab-tests", json={"name": "light", "min_ratings": 2, "variants": [
        {"label": "soft", "prompt": "hero", "version": 1}, {"label": "hard", "prompt": "hero", "version": 2}]})
    assert made.status_code == 201 and [v["label"] for v in made.json()["variants"]] == ["soft", "hard"]
    answers = [(await client.post("/ab-tests/light/jobs", json={"key": f"order-{i}", "values": {"subject": "a mug"},
                                                               "params": {"seed": i}})).json() for i in range(12)]
    repeat = (await client.post("/ab-tests/light/jobs", json={"key": "order-3", "values": {"subject": "a mug"},
                                                              "params": {"seed": 3}})).json()
    assert repeat["variant"] == answers[3]["variant"] and repeat["job_id"] == answers[3]["job_id"]
    assert {a["variant"] for a in answers} == {"soft", "hard"}
    for a in answers:
        job = (await client.get(f"/jobs/{a['job_id']}")).json()
        assert job["params"]["prompt"] == f"a mug, {a['variant']} light"
        rated = await client.post(f"/jobs/{a['job_id']}/rating", json={"stars": 5 if a["variant"] == "soft" else 2})
        assert rated.status_code == 200 and rated.json()["rating"] in (5, 2)
    report = (await client.get("/ab-tests/light/report")).json()
    rows = {v["label"]: v for v in report["variants"]}
    soft = sum(a["variant"] == "soft" for a in answers)
    assert (rows["soft"]["uses"], rows["soft"]["rated"], rows["soft"]["liked"]) == (soft, soft, soft)
    assert (rows["hard"]["uses"], rows["hard"]["rated"], rows["hard"]["liked"]) == (12 - soft, 12 - soft, 0)
    assert report["significant"] is (min(soft, 12 - soft) >= 2 and rows["soft"]["p_best"] >= 0.95)
    assert report["leader"] == "soft" and report["chi2"] == pytest.approx(12.0)
    bad = await client.post("/jobs/00000000-0000-4000-8000-000000000000/rating", json={})
    assert bad.status_code == 422
    assert (await client.post("/ab-tests/nope/stop")).status_code == 404
    stopped = await client.post("/ab-tests/light/stop")
    assert stopped.json()["status"] == "stopped"
    late = await client.post("/ab-tests/light/jobs", json={"key": "order-99", "values": {"subject": "a mug"}})
    assert late.status_code == 400 and "is stopped" in late.json()["detail"]


def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        return 1, result.stdout, f"{type(result.exception).__name__}: {result.exception}"
    return result.exit_code, result.stdout, result.stderr


def test_the_cli_saves_versions_renders_and_reports(machine_pg_url: str, tmp_path: Path,
                                                    fake_comfy: FakeComfyUI) -> None:
    env = {"DATABASE_URL": machine_pg_url, "COMFYUI_URLS": fake_comfy.url, "ATELIER_DATA_DIR": str(tmp_path / "d"),
           "COLUMNS": "200"}
    template = tmp_path / "hero.j2"
    template.write_text("{{ subject }}, {% if mood %}{{ mood }}, {% endif %}studio light\n")
    code, out, err = _cli(env, "prompts", "save", "hero", "--file", str(template), "--purpose", "hero",
                          "--tag", "studio", "--default", "mood=")
    assert code == 0, err
    assert "hero: saved as version 1 (variables: mood, subject)" in out
    code, out, _ = _cli(env, "prompts", "save", "hero", "-t", "{{ subject }}, rim light", "--note", "rim")
    assert "saved as version 2" in out
    code, out, _ = _cli(env, "prompts", "render", "hero", "--version", "1", "--var", "subject=a mug", "--var",
                        "mood=calm")
    assert out.strip() == "a mug, calm, studio light"
    code, out, _ = _cli(env, "prompts", "history", "hero", "--json")
    assert [(v["version"], v["note"], v["stats"]["uses"]) for v in json.loads(out)] == [(1, "", 0), (2, "rim", 0)]
    code, out, err = _cli(env, "prompts", "render", "hero", "--version", "1")
    assert code == 1 and "needs a value for subject" in err
    code, out, err = _cli(env, "prompts", "fork", "hero", "hero-rim")
    assert code == 0 and "hero-rim: forked from hero as version 1 (variables: subject)" in out, err
    code, out, err = _cli(env, "prompts", "fork", "hero", "hero-rim")
    assert code == 1 and "a prompt named 'hero-rim' exists" in err
    code, out, err = _cli(env, "ab", "create", "rim", "--variant", "A=hero@1", "--variant",
                          "B=hero@2,workflow=txt2img-turbo,weight=2", "--purpose", "hero", "--min-ratings", "5")
    assert code == 0, err
    assert "hero@2 + workflow txt2img-turbo ×2" in " ".join(out.split())
    code, out, _ = _cli(env, "ab", "report", "rim", "--json")
    report = json.loads(out)
    assert report["significant"] is False and report["recommendation"].startswith("not enough data yet")
    code, out, _ = _cli(env, "ab", "report", "rim")
    assert "recommendation:" in out and "Bayesian beta-binomial" in " ".join(out.split())
    code, _, err = _cli(env, "ab", "create", "x", "--variant", "A=hero")
    assert code == 1 and "cannot read 'hero'" in err
    code, out, _ = _cli(env, "ab", "stop", "rim")
    assert "rim: stopped" in out


def test_workflows_measured_shows_the_learned_times(machine_pg_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": machine_pg_url, "ATELIER_DATA_DIR": str(tmp_path / "d"), "COLUMNS": "200"}
    settings = load_settings(database_url=machine_pg_url, data_dir=tmp_path / "d")

    async def learn() -> None:
        async with LedgerService.open(settings, conninfo=machine_pg_url) as svc, svc.ledger.pool.connection() as conn:
            await conn.execute("INSERT INTO workflow_timings (workflow, server, runs, avg_seconds) VALUES "
                               "('txt2img-hq', 'http://gpu-a:8188', 4, 7.25)")

    asyncio.run(learn())
    code, out, err = _cli(env, "workflows", "--measured")
    assert code == 0, err
    row = next(line for line in out.splitlines() if "txt2img-hq" in line)
    assert "7.25" in row and "(4)" in row
    other = next(line for line in out.splitlines() if "txt2img-turbo" in line)
    assert "—" in other
