"""Scrape-time metrics on the machine's PostgreSQL: per-owner usage, queue age, worker heartbeats, API /metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psycopg
import pytest
import pytest_asyncio
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool

from atelier.api.jobs import build_job_api
from atelier.tools.ledger.migrations import apply_migrations
from atelier.tools.ledger.service import LedgerService
from atelier.tools.ledger.store import JobLedger
from atelier.tools.metrics.comfy_probe import ComfyProbeCollector
from atelier.tools.metrics.usage import OTHER_OWNERS, LedgerPool, UsageCollector
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from tests.fakes.comfyui_server import FakeComfyUI

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(text: str) -> Samples:
    """(name, sorted labels) → value of every sample in an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _scrape(*collectors: Collector) -> Samples:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return _samples(generate_latest(registry).decode())


def _job(conn: psycopg.Connection[tuple[object, ...]], owner: str, status: str, *, gpu: float | None = None,
         cost: float | None = None, age: float = 0.0, not_before_in: float = 0.0) -> None:
    conn.execute(
        "INSERT INTO jobs (id, status, workflow, params, owner, cache_key, gpu_seconds, actual_cost, created_at, "
        "not_before) VALUES (%(id)s, %(status)s, 'txt2img', '{}', %(owner)s, %(key)s, %(gpu)s, %(cost)s, "
        "now() - make_interval(secs => %(age)s), "
        "now() + make_interval(secs => CASE WHEN %(later)s > 0 THEN %(later)s ELSE -%(age)s END))",
        {"id": uuid.uuid4(), "status": status, "owner": owner, "key": uuid.uuid4().hex, "gpu": gpu, "cost": cost,
         "age": age, "later": not_before_in},
    )


def _worker(conn: psycopg.Connection[tuple[object, ...]], worker: str, *, silent: float, stopped: bool = False) -> None:
    conn.execute(
        "INSERT INTO workers (id, host, pid, servers, last_seen, stopped_at) "
        "VALUES (%s, 'box', 1, '{}', now() - make_interval(secs => %s), CASE WHEN %s THEN now() END)",
        (worker, silent, stopped),
    )


@pytest.fixture
def ledger_url(machine_pg_url: str) -> str:
    """A migrated, empty ledger."""
    apply_migrations(machine_pg_url)
    return machine_pg_url


@pytest_asyncio.fixture
async def ledger_pool(ledger_url: str) -> AsyncIterator[LedgerPool]:
    """The ledger's pool and its loop, which the collectors read through (scrapes run in another thread)."""
    async with JobLedger.open(ledger_url) as ledger:
        yield LedgerPool(ledger.pool, asyncio.get_running_loop())


async def _scrape_off_loop(*collectors: Collector) -> Samples:
    """Scrape as Prometheus' server threads do: from a thread, while the pool's loop keeps running."""
    return await asyncio.to_thread(_scrape, *collectors)


@pytest.mark.asyncio
async def test_usage_per_owner_queue_age_and_workers(ledger_url: str, ledger_pool: LedgerPool) -> None:
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        _job(conn, "ana", "succeeded", gpu=10.0, cost=0.02)
        _job(conn, "ana", "succeeded", gpu=5.5, cost=0.01)
        _job(conn, "ana", "failed", gpu=1.0)
        _job(conn, "ana", "queued", age=120)
        _job(conn, "bo", "succeeded", gpu=3.0, cost=0.005)
        _job(conn, "cy", "succeeded", gpu=0.5, cost=0.001)
        _job(conn, "cy", "queued", age=30)
        _job(conn, "dee", "queued", age=5000, not_before_in=60)  # held back for a retry: not waiting yet
        _worker(conn, "alive", silent=2)
        _worker(conn, "silent", silent=200)
        _worker(conn, "clean-stop", silent=500, stopped=True)
        _worker(conn, "long-gone", silent=7200)
    got = await _scrape_off_loop(UsageCollector(ledger_pool, alive_seconds=90, forget_seconds=900, max_owners=2))
    assert got[("atelier_ledger_up", ())] == 1
    # ana and bo have the most GPU time; cy and dee are summed as _other
    assert got[("atelier_owner_gpu_seconds_total", (("owner", "ana"),))] == pytest.approx(16.5)
    assert got[("atelier_owner_gpu_seconds_total", (("owner", "bo"),))] == pytest.approx(3.0)
    assert got[("atelier_owner_gpu_seconds_total", (("owner", OTHER_OWNERS),))] == pytest.approx(0.5)
    assert got[("atelier_owner_cost_total", (("owner", "ana"),))] == pytest.approx(0.03)
    assert got[("atelier_owner_jobs", (("owner", "ana"), ("status", "succeeded")))] == 2
    assert got[("atelier_owner_jobs", (("owner", OTHER_OWNERS), ("status", "queued")))] == 2
    assert not any(dict(labels).get("owner") in {"cy", "dee"} for _, labels in got)
    assert 119 <= got[("atelier_queue_oldest_seconds", ())] < 200
    assert got[("atelier_workers_alive", ())] == 1
    assert got[("atelier_workers_registered", ())] == 2
    ages = {dict(labels)["worker"]: value for (name, labels), value in got.items()
            if name == "atelier_worker_heartbeat_age_seconds"}
    assert set(ages) == {"alive", "silent"}
    assert ages["alive"] < 30 and 199 <= ages["silent"] < 300


@pytest.mark.asyncio
async def test_an_empty_ledger_still_exports_every_family(ledger_pool: LedgerPool) -> None:
    got = await _scrape_off_loop(UsageCollector(ledger_pool))
    assert got[("atelier_queue_oldest_seconds", ())] == 0
    assert got[("atelier_workers_alive", ())] == 0
    assert got[("atelier_ledger_up", ())] == 1


@pytest.mark.asyncio
async def test_an_unreachable_ledger_never_fails_the_scrape(closed_port_url: str) -> None:
    url = closed_port_url.replace("http://", "postgresql://postgres@") + "/nothing"
    pool: AsyncConnectionPool[psycopg.AsyncConnection[tuple[object, ...]]] = AsyncConnectionPool(
        url, min_size=1, open=False, reconnect_timeout=60)
    await pool.open(wait=False)
    try:
        started = time.monotonic()
        got = await _scrape_off_loop(UsageCollector(LedgerPool(pool, asyncio.get_running_loop()), timeout_seconds=2))
        assert time.monotonic() - started < 5
    finally:
        await pool.close()
    assert got[("atelier_ledger_up", ())] == 0
    assert not any(name.startswith("atelier_owner") for name, _ in got)


@pytest.mark.asyncio
async def test_collecting_on_the_pools_own_loop_reports_down_instead_of_blocking(ledger_pool: LedgerPool) -> None:
    got = _scrape(UsageCollector(ledger_pool))  # on the loop: waiting for it would deadlock
    assert got[("atelier_ledger_up", ())] == 0


def test_comfyui_probe_up_down_and_vram(fake_comfy: FakeComfyUI, closed_port_url: str) -> None:
    got = _scrape(ComfyProbeCollector([fake_comfy.url, closed_port_url], timeout_seconds=2))
    assert got[("atelier_comfyui_up", (("server", fake_comfy.url),))] == 1
    assert got[("atelier_comfyui_up", (("server", closed_port_url),))] == 0
    assert got[("atelier_comfyui_vram_total_bytes", (("server", fake_comfy.url),))] > 0
    assert ("atelier_comfyui_vram_total_bytes", (("server", closed_port_url),)) not in got
    assert got[("atelier_comfyui_probe_seconds", (("server", closed_port_url),))] < 2.5


@pytest.fixture
def settings(tmp_path: Path, fake_comfy: FakeComfyUI) -> Settings:
    """Settings pointing at the fake ComfyUI."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls=fake_comfy.url)


@pytest_asyncio.fixture
async def svc(machine_pg_url: str, settings: Settings) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database."""
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "out")) as service:
        yield service


@pytest.mark.asyncio
async def test_the_job_api_serves_metrics(svc: LedgerService, settings: Settings, fake_comfy: FakeComfyUI) -> None:
    api = build_job_api(settings, service=svc)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
        before = _samples((await http.get("/metrics")).text)  # the ledger is not open yet: only that is said
        assert before[("atelier_ledger_up", ())] == 0
        api.state.ledger = svc
        made = await http.post("/jobs", json={"params": {"prompt": "a fox", "seed": 1}, "owner": "ana"})
        assert made.status_code == 201
        assert (await http.get(f"/jobs/{made.json()['id']}")).status_code == 200
        assert (await http.get("/jobs/00000000-0000-4000-8000-000000000000")).status_code == 404
        assert (await http.get("/no/such/route")).status_code == 404
        response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert "/metrics" not in (await _openapi_paths(api))
    got = _samples(response.text)
    requests = {(dict(labels)["route"], dict(labels)["status"]): value for (name, labels), value in got.items()
                if name == "atelier_api_requests_total"}
    assert requests[("/jobs", "201")] == 1
    assert requests[("/jobs/{job_id}", "200")] == 1 and requests[("/jobs/{job_id}", "404")] == 1
    assert requests[("unmatched", "404")] == 1
    assert got[("atelier_api_request_seconds_count", (("method", "POST"), ("route", "/jobs")))] == 1
    assert got[("atelier_ledger_up", ())] == 1
    assert got[("atelier_jobs", (("status", "queued"),))] == 1
    assert got[("atelier_owner_jobs", (("owner", "ana"), ("status", "queued")))] == 1
    assert got[("atelier_comfyui_up", (("server", fake_comfy.url),))] == 1


async def _openapi_paths(api: FastAPI) -> set[str]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
        return set((await http.get("/openapi.json")).json()["paths"])
