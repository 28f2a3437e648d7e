"""The prompt library and A/B tests on real PostgreSQL: versions under concurrency, stats, reports, the designer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from atelier.tools.ledger.models import JobOutput, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore, output_key
from atelier.tools.prompts.abtests import ABTestError, assign_variant
from atelier.tools.prompts.library import NotTheAuthorError, PromptNotFoundError
from atelier.tools.prompts.models import ChosenPrompt, PromptDraft, VariantSpec
from atelier.tools.prompts.selection import choose_prompt
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import load_settings

SERVER = "http://127.0.0.1:8188"
HERO = "{{ subject }}, {{ look }}, {{ light }}"


@pytest_asyncio.fixture
async def svc(pg_url: str, tmp_path: Path) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database (both PostgreSQLs)."""
    settings = load_settings(data_dir=tmp_path / "data", comfyui_urls=SERVER)
    async with LedgerService.open(settings, conninfo=pg_url, store=LocalOutputStore(tmp_path / "out")) as service:
        yield service


async def _made(svc: LedgerService, chosen: ChosenPrompt, seed: int, *, stars: int | None = None,
                thumb: int | None = None) -> None:
    """One finished job made with `chosen`, rated as given."""
    outcome = await svc.submit(JobRequest(params=GenerationParams(prompt=f"p{seed}", seed=seed, steps=2),
                                          workflow="txt2img-turbo", owner="ana"))
    await svc.prompts.record_use(outcome.job.id, chosen, f"key-{seed}")
    claim = await svc.ledger.claim("w", server=SERVER, vram_free_gb=24, known_servers=[SERVER], lease_seconds=30)
    assert claim is not None and claim.job.id == outcome.job.id
    stored = svc.store.put(output_key(str(claim.job.id), 0, when=datetime.now(UTC)), b"png")
    output = JobOutput(uri=stored.uri, key=stored.key, size=stored.size, sha256=stored.sha256, node_id="9",
                       comfy_filename="x.png")
    await svc.ledger.complete(claim.job, [output], gpu_seconds=1.0, actual_cost=0.001)
    if stars is not None or thumb is not None:
        await svc.ledger.rate(outcome.job.id, "ana", rating=stars, thumb=thumb)


@pytest.mark.asyncio
async def test_every_edit_is_a_new_version_and_concurrent_saves_never_collide(svc: LedgerService) -> None:
    first = await svc.prompts.save(PromptDraft(name="hero", template=HERO, category="product", purpose="hero",
                                               tags=["Studio", "studio", " product"]), author="ana")
    assert (first.created, first.version.version, first.prompt.tags) == (True, 1, ["product", "studio"])
    with pytest.raises(NotTheAuthorError, match=r"prompt 'hero' belongs to ana.*prompts fork hero hero-bo"):
        await svc.prompts.save(PromptDraft(name="hero", template=HERO, tags=["catalog"]), author="bo")
    same = await svc.prompts.save(PromptDraft(name="hero", template=HERO, tags=["catalog"]), author="ana")
    assert (same.created, same.version.version, same.prompt.tags) == (False, 1, ["catalog"])
    drafts = [PromptDraft(name="hero", template=HERO + f", variant {i}", note=f"edit {i}") for i in range(20)]
    results = await asyncio.gather(*(svc.prompts.save(d, author="ana") for d in drafts))
    assert sorted(r.version.version for r in results) == list(range(2, 22))
    history = await svc.prompts.history("hero")
    assert [v.version for v in history] == list(range(1, 22))
    assert {v.template for v in history[1:]} == {d.template for d in drafts}
    # The same new template saved 10 times at once: one version.
    twins = await asyncio.gather(*(svc.prompts.save(PromptDraft(name="hero", template="{{ subject }} only"),
                                                    author="ana") for _ in range(10)))
    assert sum(t.created for t in twins) == 1 and {t.version.version for t in twins} == {22}
    assert (await svc.prompts.get("hero")).latest == 22
    with pytest.raises(PromptNotFoundError, match="has no version 99; it has versions 1–22"):
        await svc.prompts.version("hero", 99)


@pytest.mark.asyncio
async def test_usage_and_ratings_per_version_and_the_best_for_a_purpose(svc: LedgerService) -> None:
    v1 = (await svc.prompts.save(PromptDraft(name="hero", template=HERO, purpose="hero"), author="ana")).version
    v2 = (await svc.prompts.save(PromptDraft(name="hero", template=HERO + ", 85mm"), author="ana")).version
    other = (await svc.prompts.save(PromptDraft(name="hero-moody", template="{{ subject }}, dark", purpose="hero"),
                                    author="ana")).version
    seed = iter(range(1000))
    for stars in (5, 4, 2):
        await _made(svc, ChosenPrompt(version=v1), next(seed), stars=stars)
    await _made(svc, ChosenPrompt(version=v1), next(seed))  # used, never rated
    ratings: tuple[tuple[int | None, int | None], ...] = ((2, None), (None, -1), (None, 1))
    for given_stars, thumb in ratings:
        await _made(svc, ChosenPrompt(version=v2), next(seed), stars=given_stars, thumb=thumb)
    stats = {s.version: s for s in await svc.prompts.stats("hero")}
    assert (stats[1].uses, stats[1].rated, stats[1].liked) == (4, 3, 2)
    assert stats[1].mean_stars == pytest.approx(11 / 3)
    assert (stats[2].uses, stats[2].rated, stats[2].liked) == (3, 3, 1)
    assert stats[1].score == pytest.approx(3 / 5) and stats[2].score == pytest.approx(2 / 5)
    best = await svc.prompts.best_for("hero")
    assert best is not None and best[0].ref == v1.ref  # 0.6 beats the untried hero-moody (0.5) and v2 (0.4)
    assert (await svc.prompts.best_for("thumbnail")) is None
    assert [p.name for p in await svc.prompts.search(purpose="hero")] == ["hero", "hero-moody"]
    assert other.version == 1


@pytest.mark.asyncio
async def test_an_ab_report_matches_the_hand_computed_case(svc: LedgerService) -> None:
    a = (await svc.prompts.save(PromptDraft(name="hero", template=HERO, purpose="hero"), author="ana")).version
    b = (await svc.prompts.save(PromptDraft(name="hero", template=HERO + ", 85mm"), author="ana")).version
    test = await svc.abtests.create("lens", [VariantSpec(label="A", prompt="hero", version=1),
                                             VariantSpec(label="B", prompt="hero", version=2)],
                                    author="ana", purpose="hero", min_ratings=20)
    early = await svc.abtests.report("lens")
    assert early.recommendation.startswith("not enough data yet") and not early.significant
    seed = iter(range(10_000))
    for version, label, liked in ((a, "A", 30), (b, "B", 20)):
        chosen = ChosenPrompt(version=version, ab_test=test.name, variant=label)
        for i in range(50):
            await _made(svc, chosen, next(seed), stars=5 if i < liked else 2)
    report = await svc.abtests.report("lens")
    rows = {r.label: r for r in report.variants}
    assert (rows["A"].uses, rows["A"].rated, rows["A"].liked, rows["A"].like_rate) == (50, 50, 30, 0.6)
    assert (rows["B"].rated, rows["B"].liked) == (50, 20)
    assert report.chi2 == pytest.approx(4.0) and report.p_value == pytest.approx(0.0455, abs=1e-4)
    assert report.significant and report.leader == "A" and rows["A"].p_best == pytest.approx(0.9764, abs=1e-4)
    assert report.recommendation.startswith("use A")
    stopped = await svc.abtests.stop("lens", "ana")
    assert stopped.status == "stopped" and (await svc.abtests.running_for("hero")) is None
    with pytest.raises(ABTestError, match="is stopped"):
        await svc.abtests.assign("lens", "k")


@pytest.mark.asyncio
async def test_bad_tests_are_refused_with_the_fix(svc: LedgerService) -> None:
    await svc.prompts.save(PromptDraft(name="hero", template=HERO), author="ana")
    with pytest.raises(ABTestError, match="at least two variants"):
        await svc.abtests.create("t", [VariantSpec(label="A", prompt="hero", version=1)], author="ana")
    with pytest.raises(ABTestError, match="unknown workflow 'nope'"):
        await svc.abtests.create("t", [VariantSpec(label="A", workflow="txt2img"),
                                       VariantSpec(label="B", workflow="nope")], author="ana")
    with pytest.raises(PromptNotFoundError, match="hero@7 is not in the library"):
        await svc.abtests.create("t", [VariantSpec(label="A", prompt="hero", version=1),
                                       VariantSpec(label="B", prompt="hero", version=7)], author="ana")
    await svc.abtests.create("t", [VariantSpec(label="A", workflow="txt2img"),
                                   VariantSpec(label="B", workflow="txt2img-turbo")], author="ana", purpose="hero")
    with pytest.raises(ABTestError, match="already running for purpose 'hero'"):
        await svc.abtests.create("t2", [VariantSpec(label="A", workflow="txt2img"),
                                        VariantSpec(label="B", workflow="txt2img-turbo")], author="ana",
                                 purpose="hero")
    with pytest.raises(ABTestError, match="named 't' exists"):
        await svc.abtests.create("t", [VariantSpec(label="A", workflow="txt2img"),
                                       VariantSpec(label="B", workflow="txt2img-turbo")], author="ana")


@pytest.mark.asyncio
async def test_a_variant_may_name_a_workflow_of_the_users_folder(pg_url: str, tmp_path: Path) -> None:
    from tests.user_workflows import make_user_workflows

    settings = load_settings(data_dir=tmp_path / "data", comfyui_urls=SERVER,
                             workflows_dir=make_user_workflows(tmp_path / "workflows", qwen=False))
    async with LedgerService.open(settings, conninfo=pg_url, store=LocalOutputStore(tmp_path / "out")) as service:
        test = await service.abtests.create("mine", [VariantSpec(label="A", workflow="txt2img"),
                                                     VariantSpec(label="B", workflow="my-sketch")], author="ana")
        assert [v.workflow for v in test.variants] == ["txt2img", "my-sketch"]
        with pytest.raises(ABTestError, match=r"unknown workflow 'theirs'; choose one of: .*my-sketch"):
            await service.abtests.create("t", [VariantSpec(label="A", workflow="txt2img"),
                                               VariantSpec(label="B", workflow="theirs")], author="ana")


@pytest.mark.asyncio
async def test_assignment_is_the_same_from_every_process_view(svc: LedgerService) -> None:
    await svc.prompts.save(PromptDraft(name="hero", template=HERO, purpose="hero"), author="ana")
    await svc.prompts.save(PromptDraft(name="hero", template=HERO + ", 85mm"), author="ana")
    test = await svc.abtests.create("lens", [VariantSpec(label="A", prompt="hero", version=1),
                                             VariantSpec(label="B", prompt="hero", version=2, weight=2)],
                                    author="ana", purpose="hero")
    keys = [f"chat:t{i}:m:0" for i in range(60)]
    concurrent = await asyncio.gather(*(choose_prompt(svc.prompts, svc.abtests, "hero", k) for k in keys))
    again = [await svc.abtests.assign("lens", k) for k in keys]
    assert [c.variant for c in concurrent if c] == [v.label for v in again]
    assert [c.variant for c in concurrent if c] == [assign_variant("lens", test.variants, k).label for k in keys]
    assert all(c is not None and c.version is not None and c.version.version == (1 if c.variant == "A" else 2)
               for c in concurrent)


@pytest.mark.asyncio
async def test_find_prompts_ranks_by_rating_and_renders_for_agents(svc: LedgerService) -> None:
    from atelier.tools.toolkit import TOOLS, ToolContext, run_tool

    liked = (await svc.prompts.save(PromptDraft(name="hero-warm", template="{{ subject }}, warm light",
                                                purpose="hero"), author="ana")).version
    await svc.prompts.save(PromptDraft(name="hero-cold", template="{{ subject }}, cold light, {{ lens }}",
                                       purpose="hero"), author="ana")
    await svc.prompts.save(PromptDraft(name="thumb", template="{{ subject }}, flat", purpose="thumbnail"), author="ana")
    for seed in range(3):
        await _made(svc, ChosenPrompt(version=liked), seed, stars=5)
    spec = next(t for t in TOOLS if t.name == "find_prompts")
    ctx = ToolContext(settings=svc.settings, ledger=svc, owner="ana")
    found = await run_tool(spec, ctx, {"purpose": "Hero", "values": [{"name": "subject", "value": "a mug"}]})
    assert [(p.name, p.rated, p.liked, p.text) for p in found] == [
        ("hero-warm", 3, 3, "a mug, warm light"), ("hero-cold", 0, 0, None)]  # cold needs `lens` too
    assert found[0].score == pytest.approx(0.8) and found[1].variables == ["lens", "subject"]


@pytest.mark.asyncio
async def test_the_library_and_the_tests_filter_by_author(svc: LedgerService) -> None:
    for name, author in (("ana-hero", "ana"), ("bo-hero", "bo"), ("ana-detail", "ana")):
        await svc.prompts.save(PromptDraft(name=name, template=HERO, category="product"), author=author)
        await svc.prompts.save(PromptDraft(name=name, template=HERO + ", 85mm"), author=author)
        await svc.abtests.create(f"{name}-lens", [VariantSpec(label="A", prompt=name, version=1),
                                                  VariantSpec(label="B", prompt=name, version=2)], author=author)
    await svc.abtests.stop("ana-detail-lens", "ana")
    assert [p.name for p in await svc.prompts.search(author="ana")] == ["ana-detail", "ana-hero"]
    assert [p.name for p in await svc.prompts.search(author="bo", category="product")] == ["bo-hero"]
    assert await svc.prompts.search(author="cy") == []
    assert len(await svc.prompts.search()) == 3
    assert [t.name for t in await svc.abtests.all(author="ana")] == ["ana-detail-lens", "ana-hero-lens"]
    assert [t.name for t in await svc.abtests.all(author="ana", status="running")] == ["ana-hero-lens"]
    assert [t.name for t in await svc.abtests.all(author="bo", status="stopped")] == []
    assert len(await svc.abtests.all()) == 3
