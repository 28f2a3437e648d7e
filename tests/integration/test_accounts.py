"""Accounts on real PostgreSQL: users, hashed keys, JWTs, quotas enforced in the submit transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from atelier.tools.accounts.auth import Authenticator
from atelier.tools.accounts.directory import AccountError, UserDirectory
from atelier.tools.accounts.keys import hash_key
from atelier.tools.accounts.models import Quotas
from atelier.tools.accounts.quotas import QuotaExceededError
from atelier.tools.accounts.tokens import AuthError, issue_token
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.models import JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import load_settings

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def svc(pg_url: str, tmp_path: Path) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database (both PostgreSQLs), in accounts mode."""
    settings = load_settings(data_dir=tmp_path / "data", comfyui_urls="http://127.0.0.1:9", auth_mode="accounts")
    async with LedgerService.open(settings, conninfo=pg_url, store=LocalOutputStore(tmp_path / "out")) as service:
        yield service


def _request(owner: str, seed: int, key: str | None = None) -> JobRequest:
    """A small txt2img job."""
    return JobRequest(params=GenerationParams(prompt=f"a fox {seed}", seed=seed, steps=2), workflow="txt2img-turbo",
                      owner=owner, idempotency_key=key)


async def test_fifty_concurrent_submits_with_ten_images_left_accept_exactly_ten(svc: LedgerService) -> None:
    directory = UserDirectory(svc.ledger.pool)
    await directory.create("ana", quotas=Quotas(images_per_day=12))
    for seed in range(2):
        await svc.submit(_request("ana", seed))
    results = await asyncio.gather(*(svc.submit(_request("ana", 100 + i)) for i in range(50)),
                                   return_exceptions=True)
    accepted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, QuotaExceededError)]
    assert len(accepted) == 10 and len(refused) == 40
    assert refused[0].quota == "images_per_day" and refused[0].used == 12 and refused[0].limit == 12
    assert "images per day quota: 12 of 12 used; it resets at" in str(refused[0]) and "UTC" in str(refused[0])
    # Repeating an accepted request by its key is no new image: it is answered, not refused.
    keyed = await asyncio.gather(*(svc.submit(_request("bo", i, key=f"k{i}")) for i in range(3)))
    assert all(k.created for k in keyed)
    # Other owners (no account: local mode and tests) have no quotas.
    assert (await svc.submit(_request("someone", 1))).created


async def test_concurrency_gpu_and_budget_quotas_name_the_limit(svc: LedgerService) -> None:
    directory = UserDirectory(svc.ledger.pool)
    await directory.create("bo", quotas=Quotas(max_concurrent=2))
    await svc.submit(_request("bo", 1))
    await svc.submit(_request("bo", 2))
    with pytest.raises(QuotaExceededError, match="max concurrent quota: 2 of 2 used; it frees up"):
        await svc.submit(_request("bo", 3))
    with pytest.raises(QuotaExceededError):  # the same values under a new key are a new job
        await svc.submit(_request("bo", 2, key="again"))
    await directory.create("cy", quotas=Quotas(budget_per_month=0.0))
    with pytest.raises(QuotaExceededError, match=r"budget per month quota.*resets at \d{4}-\d{2}-01 00:00 UTC"):
        await svc.submit(_request("cy", 1))
    await directory.create("di", quotas=Quotas(gpu_seconds_per_day=0.5))
    with pytest.raises(QuotaExceededError, match="gpu seconds per day"):
        await svc.submit(_request("di", 1))
    results = await svc.submit_many([_request("bo", 10), _request("someone", 11)])
    assert isinstance(results[0], QuotaExceededError) and not isinstance(results[1], AtelierError)


async def test_a_batch_takes_what_the_quota_allows_and_refuses_the_rest(svc: LedgerService) -> None:
    await UserDirectory(svc.ledger.pool).create("ana", quotas=Quotas(images_per_day=3))
    results = await svc.submit_many([_request("ana", i, key=f"b{i}") for i in range(5)])
    assert [isinstance(r, QuotaExceededError) for r in results] == [False, False, False, True, True]
    again = await svc.submit_many([_request("ana", i, key=f"b{i}") for i in range(3)])
    assert all(not isinstance(r, AtelierError) and not r.created for r in again)  # reruns add nothing, refuse none


async def test_tiers_feed_the_ledger_priority(svc: LedgerService) -> None:
    directory = UserDirectory(svc.ledger.pool)
    await directory.create("vip", tier="priority")
    await directory.create("batchy", tier="bulk")
    await directory.create("boss", role="admin")
    vip = await svc.submit(JobRequest(params=GenerationParams(prompt="x", seed=1), owner="vip", priority=50))
    bulk = await svc.submit(JobRequest(params=GenerationParams(prompt="x", seed=2), owner="batchy", priority=3))
    boss = await svc.submit(JobRequest(params=GenerationParams(prompt="x", seed=3), owner="boss", priority=50))
    assert (vip.job.priority, bulk.job.priority, boss.job.priority) == (19, -7, 50)
    with pytest.raises(AccountError, match="unknown tier 'gold'"):
        await directory.create("x", tier="gold")


async def test_keys_are_stored_hashed_and_tokens_are_refused_when_expired_tampered_or_revoked(
        svc: LedgerService) -> None:
    directory = UserDirectory(svc.ledger.pool)
    await directory.create("ana")
    made = await directory.create_key("ana", "n8n")
    async with svc.ledger.pool.connection() as conn:
        cur = await conn.execute("SELECT hash FROM api_keys")
        stored = [row["hash"] for row in await cur.fetchall()]
    assert stored == [hash_key(made.secret)] and made.secret not in stored
    auth = Authenticator(svc.settings, directory)
    by_key = await auth.principal(None, made.secret)
    assert (by_key.user_id, by_key.role, by_key.via) == ("ana", "user", "api-key")
    token, ttl = await auth.token_for(made.secret)
    assert ttl == 3600
    assert (await auth.principal(f"Bearer {token}", None)).via == "token"
    with pytest.raises(AuthError, match="needs credentials"):
        await auth.principal(None, None)
    with pytest.raises(AuthError, match="signature is not valid"):
        await auth.principal(f"Bearer {token[:-4]}AAAA", None)
    old = issue_token(by_key, await auth.secret(), ttl_seconds=60, now=time.time() - 3600)
    with pytest.raises(AuthError, match="has expired"):
        await auth.principal(f"Bearer {old}", None)
    with pytest.raises(AuthError, match="not valid \\(unknown or mistyped\\)"):
        await auth.principal(None, made.secret[:-2] + "xx")
    await directory.revoke(made.key.prefix)
    for header, key in ((f"Bearer {token}", None), (None, made.secret)):
        with pytest.raises(AuthError, match="was revoked") as refused:
            await auth.principal(header, key)
        assert refused.value.status == 401
    await directory.update("ana", disabled=True)
    fresh = await directory.create_key("ana")
    with pytest.raises(AuthError, match="is disabled") as disabled:
        await auth.principal(None, fresh.secret)
    assert disabled.value.status == 403
