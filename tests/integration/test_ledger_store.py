"""The ledger's SQL on real PostgreSQL (the machine's server and the embedded one): submit, claim, fence, cache."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio

from atelier.tools.ledger.migrations import MIGRATIONS, apply_migrations
from atelier.tools.ledger.models import JobOutput, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.ledger.store import Claim, LeaseLostError
from atelier.tools.outputs.store import LocalOutputStore, output_key
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import load_settings
from atelier.tools.worker.heartbeat import Heartbeat, HeldJobs

pytestmark = pytest.mark.asyncio

SERVER = "http://127.0.0.1:8188"


@pytest_asyncio.fixture
async def svc(pg_url: str, tmp_path: Path) -> AsyncIterator[LedgerService]:
    """A ledger service on a fresh database with a local output folder."""
    settings = load_settings(data_dir=tmp_path / "data", comfyui_urls=SERVER)
    async with LedgerService.open(settings, conninfo=pg_url, store=LocalOutputStore(tmp_path / "out")) as service:
        yield service


def request(prompt: str = "a red fox", **extra: object) -> JobRequest:
    """A txt2img request with a fixed seed."""
    params = GenerationParams(prompt=prompt, seed=7, steps=4)
    return JobRequest.model_validate({"params": params, **extra})


async def claim(svc: LedgerService, worker: str = "w1", lease: float = 30.0, vram: float = 24.0) -> Claim | None:
    """Claim one job for SERVER."""
    return await svc.ledger.claim(worker, server=SERVER, vram_free_gb=vram, known_servers=[SERVER],
                                  lease_seconds=lease)


async def expire_lease(svc: LedgerService, job_id: uuid.UUID) -> None:
    """Make a job's lease lapse now, as if its worker had died."""
    async with svc.ledger.pool.connection() as conn:
        await conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (job_id,))


def fake_output(svc: LedgerService, job_id: uuid.UUID) -> JobOutput:
    """Store a small file as a job's output, the way the worker does."""
    stored = svc.store.put(output_key(str(job_id), 0, when=datetime.now(UTC)), b"png-bytes")
    return JobOutput(uri=stored.uri, key=stored.key, size=stored.size, sha256=stored.sha256, node_id="9",
                     comfy_filename="x.png")


async def test_migrations_apply_once_when_processes_start_together(pg_url: str) -> None:
    await asyncio.to_thread(_migrate_from_six_threads, pg_url)


def _migrate_from_six_threads(pg_url: str) -> None:
    """Six threads, six connections, all migrating at once."""
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(apply_migrations(pg_url))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    applied = [v for r in results for v in r]
    assert sorted(applied) == [m.version for m in MIGRATIONS], "each migration applied exactly once in all"
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT version FROM atelier_migrations").fetchall()
    assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
    assert apply_migrations(pg_url) == []


async def test_submit_records_a_queued_job_with_plan_and_estimates(svc: LedgerService) -> None:
    outcome = await svc.submit(request(priority=3, owner="ana"))
    job = outcome.job
    assert outcome.created and not outcome.cached
    assert job.status == "queued" and job.workflow == "txt2img" and job.owner == "ana" and job.priority == 3
    assert job.params["prompt"] == "a red fox" and job.params["seed"] == 7
    assert job.vram_gb == 4 and job.estimated_seconds == 8 and job.estimated_cost is not None
    assert (await svc.get(job.id)) == job


async def test_a_random_seed_is_fixed_when_the_job_is_recorded(svc: LedgerService) -> None:
    job = (await svc.submit(JobRequest(params=GenerationParams(prompt="sea")))).job
    assert isinstance(job.params["seed"], int)


async def test_the_same_idempotency_key_returns_the_same_job_even_concurrently(svc: LedgerService) -> None:
    outcomes = await asyncio.gather(*(svc.submit(request(idempotency_key="order-17")) for _ in range(8)))
    assert len({o.job.id for o in outcomes}) == 1
    assert sum(o.created for o in outcomes) == 1
    assert len(await svc.list_jobs()) == 1


async def test_claims_follow_priority_then_age(svc: LedgerService) -> None:
    low = (await svc.submit(request("low"))).job
    high = (await svc.submit(request("high", priority=5))).job
    older_low = low
    first, second = await claim(svc), await claim(svc)
    assert first is not None and second is not None
    assert first.job.id == high.id and second.job.id == older_low.id
    assert first.job.status == "submitted" and first.job.attempts == 1 and first.job.server == SERVER
    assert await claim(svc) is None


async def test_a_job_needing_more_vram_than_is_free_is_not_claimed(svc: LedgerService) -> None:
    await svc.submit(request())  # txt2img needs 4 GB
    assert await claim(svc, vram=2.0) is None
    assert await claim(svc, vram=4.0) is not None


async def test_concurrent_claims_never_hand_one_job_to_two_workers(svc: LedgerService) -> None:
    for i in range(60):
        await svc.submit(request(f"job {i}"))
    claimed: list[uuid.UUID] = []

    async def worker(name: str) -> None:
        while (got := await claim(svc, worker=name)) is not None:
            claimed.append(got.job.id)

    await asyncio.gather(*(worker(f"w{i}") for i in range(8)))
    assert len(claimed) == 60 and len(set(claimed)) == 60


async def test_a_lapsed_lease_is_taken_over_and_the_old_attempt_is_fenced_out(svc: LedgerService) -> None:
    job = (await svc.submit(request())).job
    first = await claim(svc, worker="dead")
    assert first is not None and not first.recovered
    assert await claim(svc, worker="other") is None  # the lease still holds
    await expire_lease(svc, job.id)
    second = await claim(svc, worker="other")
    assert second is not None and second.recovered and second.previous_server == SERVER
    assert second.job.attempts == 2 and second.job.worker == "other"
    with pytest.raises(LeaseLostError):
        await svc.ledger.complete(first.job, [fake_output(svc, job.id)], gpu_seconds=1.0, actual_cost=0.1)
    done = await svc.ledger.complete(second.job, [fake_output(svc, job.id)], gpu_seconds=1.0, actual_cost=0.1)
    assert done.status == "succeeded" and len(done.outputs) == 1 and done.lease_expires_at is None
    with pytest.raises(LeaseLostError):  # recorded once: even the owner cannot record twice
        await svc.ledger.complete(second.job, [fake_output(svc, job.id)], gpu_seconds=1.0, actual_cost=0.1)


async def test_transient_failures_back_off_then_fail_when_out_of_attempts(svc: LedgerService) -> None:
    job = (await svc.submit(request())).job
    for attempt in range(1, svc.settings.max_attempts + 1):
        got = await claim(svc)
        assert got is not None, f"attempt {attempt} was not claimable"
        after = await svc.ledger.retry_later(got.job, "ComfyUI unreachable", "ComfyUnreachableError",
                                             delay_seconds=0)
        assert after.failures == attempt
    final = await svc.get(job.id)
    assert final.status == "failed" and final.error == "ComfyUI unreachable"


async def test_a_delayed_retry_waits_for_its_time(svc: LedgerService) -> None:
    await svc.submit(request())
    got = await claim(svc)
    assert got is not None
    await svc.ledger.retry_later(got.job, "lost", "ComfyLostError", delay_seconds=60)
    assert await claim(svc) is None
    wait = await svc.ledger.seconds_until_due(default=300)
    assert 50 < wait <= 60


async def test_cancel_a_queued_job_at_once_and_flag_a_running_one(svc: LedgerService) -> None:
    queued = (await svc.submit(request("a"))).job
    running = (await svc.submit(request("b"))).job
    got = await claim(svc)
    assert got is not None and got.job.id == queued.id
    # `a` was claimed; cancel it (flag) and cancel `b` while still queued (at once).
    flagged = await svc.cancel(queued.id)
    assert flagged.status == "submitted" and flagged.cancel_requested
    cancelled = await svc.cancel(running.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    done = await svc.ledger.record_cancelled(got.job)
    assert done.status == "cancelled"
    assert (await svc.cancel(queued.id)).status == "cancelled"  # cancelling a finished job changes nothing


async def test_an_identical_success_answers_from_the_cache(svc: LedgerService) -> None:
    first = (await svc.submit(request())).job
    got = await claim(svc)
    assert got is not None
    await svc.ledger.complete(got.job, [fake_output(svc, first.id)], gpu_seconds=2.0, actual_cost=0.01)
    again = await svc.submit(request())
    assert again.cached and again.job.status == "succeeded" and again.job.cached_from == first.id
    assert again.job.outputs == (await svc.get(first.id)).outputs and again.job.gpu_seconds == 0
    other_seed = await svc.submit(JobRequest(params=GenerationParams(prompt="a red fox", seed=8, steps=4)))
    assert not other_seed.cached and other_seed.job.status == "queued"
    forced = await svc.submit(request(use_cache=False))
    assert not forced.cached and forced.job.status == "queued"


async def test_a_cached_answer_needs_its_files_to_still_exist(svc: LedgerService) -> None:
    first = (await svc.submit(request())).job
    got = await claim(svc)
    assert got is not None
    output = fake_output(svc, first.id)
    await svc.ledger.complete(got.job, [output], gpu_seconds=2.0, actual_cost=0.01)
    Path(output.uri.removeprefix("file://")).unlink()
    again = await svc.submit(request())
    assert not again.cached and again.job.status == "queued"


async def test_heartbeats_extend_held_leases_only_for_the_current_attempt(svc: LedgerService) -> None:
    await svc.submit(request())
    got = await claim(svc, worker="w1", lease=5)
    assert got is not None
    held = HeldJobs()
    held.add(got.job.id, got.job.attempts)
    beat = Heartbeat(svc.ledger.conninfo, "w1", held, lease_seconds=120)
    with psycopg.connect(svc.ledger.conninfo, autocommit=True) as conn:
        assert beat.beat(conn) == 1
        extended = await svc.get(got.job.id)
        assert extended.lease_expires_at is not None and got.job.lease_expires_at is not None
        assert extended.lease_expires_at > got.job.lease_expires_at
        held.add(got.job.id, got.job.attempts + 1)  # a stale attempt number: nothing to extend
        assert beat.beat(conn) == 0


async def test_wait_returns_when_jobs_finish(svc: LedgerService) -> None:
    job = (await svc.submit(request())).job
    waiter = asyncio.create_task(svc.wait([job.id], timeout=20))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    got = await claim(svc)
    assert got is not None
    await svc.ledger.fail(got.job, "boom", "Test")
    (finished,) = await waiter
    assert finished.status == "failed" and finished.error == "boom"


async def test_list_filters_by_status_and_owner(svc: LedgerService) -> None:
    await svc.submit(request("a", owner="ana"))
    await svc.submit(request("b", owner="bo"))
    await svc.cancel((await svc.submit(request("c", owner="ana"))).job.id)
    assert [j.params["prompt"] for j in await svc.list_jobs(owner="ana")] == ["c", "a"]
    assert [j.params["prompt"] for j in await svc.list_jobs(status="cancelled")] == ["c"]
    assert (await svc.ledger.counts()) == {"queued": 2, "cancelled": 1}


async def test_submit_many_records_a_batch_in_one_go_with_the_single_submit_rules(svc: LedgerService) -> None:
    first = (await svc.submit(request("cached one", idempotency_key="k-0"))).job
    got = await claim(svc)
    assert got is not None
    await svc.ledger.complete(got.job, [fake_output(svc, first.id)], gpu_seconds=1.0, actual_cost=0.01)
    batch = [
        request("cached one", idempotency_key="k-0"),  # key already used: the same job
        request("cached one", idempotency_key="k-1"),  # new key, identical success: from the cache
        request("fresh", idempotency_key="k-2"),
        request("fresh", idempotency_key="k-2"),  # the same key twice in one batch: one job
        JobRequest(params=GenerationParams(prompt="bad"), workflow="no-such-workflow"),
    ]
    results = await svc.submit_many(batch)
    kept, cached, fresh, twin, bad = results
    assert not isinstance(kept, Exception) and kept.job.id == first.id and not kept.created
    assert not isinstance(cached, Exception) and cached.cached and cached.job.cached_from == first.id
    assert not isinstance(fresh, Exception) and fresh.created and fresh.job.status == "queued"
    assert not isinstance(twin, Exception) and twin.job.id == fresh.job.id and not twin.created
    assert isinstance(bad, Exception) and "no-such-workflow" in str(bad)
    assert len(await svc.list_jobs()) == 3
