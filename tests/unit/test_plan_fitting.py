"""Plans that always fit: the designer gives each image only what its workflow takes, at a size it accepts, and every
planned job passes the ledger's planning and the worker's render — for every purpose, quality, VRAM level and
workflow the router can pick."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

from atelier.agents.cost_router import RouteChoice, choose_route
from atelier.agents.design_check import DesignError, planned_design
from atelier.agents.planner import Brief
from atelier.agents.visual_designer import BASE_NEGATIVE, PURPOSE_LOOK, design_image
from atelier.tools.comfyui.direct import resolve_workflow
from atelier.tools.comfyui.fitting import FitError, fit_params
from atelier.tools.comfyui.prompt_style import prompt_style_of
from atelier.tools.comfyui.templates import WorkflowTemplate, check_values, load_workflow, render
from atelier.tools.errors import WorkflowError
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings
from atelier.tools.workflow_library import load_library
from tests.fit_workflows import FIT_WORKFLOWS, write_fit_workflows, write_workflow

PURPOSES = ["hero", "lifestyle", "detail", "thumbnail", "illustration"]
TIERS = ["fast", "medium", "high", "ultra", "auto"]
VRAM = [4.0, 6.0, 8.0, 12.0, 16.0, None]
TARGETS = [None, 5.0]  # no time target, and one that makes the router step quality down
SHIPPED_TXT2IMG = ["txt2img", "txt2img-turbo", "txt2img-hq", "qwen-image", "qwen-image-ultra", "qwen-image-fast"]


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A user workflows folder holding the test workflows."""
    write_fit_workflows(tmp_path / "workflows")
    return tmp_path / "workflows"


@pytest.fixture
def settings(tmp_path: Path, user_dir: Path) -> Settings:
    """Settings whose workflows folder is `user_dir` (the ledger and the worker resolve workflows through it)."""
    return load_settings(data_dir=tmp_path / "d", workflows_dir=user_dir)


def _template(settings: Settings, name: str) -> WorkflowTemplate:
    """A workflow as the ledger and the worker resolve it."""
    return resolve_workflow(name, settings)


def test_a_workflow_without_a_negative_input_gets_no_negative_prompt(settings: Settings) -> None:
    """The reported failure: "Draw a kingfisher on a branch" on a text-to-image workflow with no negative input."""
    template = _template(settings, "t2i-no-negative")
    brief = Brief(purpose="illustration", subject="a kingfisher on a branch")
    route = RouteChoice(workflow=template.name, reason="chosen by you", seconds=20, cost=0.002, vram_gb=12)
    asked = design_image(brief, route, template=_template(settings, "txt2img")).params
    assert asked.negative == BASE_NEGATIVE
    with pytest.raises(WorkflowError, match=r"has no input for negative, but negative='blurry, low quality"):
        render(template, asked)  # what the worker did before plans were fitted
    assert fit_params(template, asked).notes[0] == "no negative prompt: t2i-no-negative has no input for it"
    design = planned_design(brief, route, template, settings, owner="ana", key="k-1", number=1)
    assert design.params.negative is None and design.params.cfg is None and design.params.denoise is None
    assert design.fitted == [], "the designer writes no negative prompt for it, so fitting has none to leave out"
    graph = render(template, design.params)
    assert graph["6"]["inputs"]["text"] == "A kingfisher on a branch.", "Flux-like: a sentence, no look, no weights"
    assert graph["7"]["inputs"]["text"] == "text, watermark", "the graph's own negative text is left alone"
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (768, 768)
    assert graph["3"]["inputs"]["steps"] == 20, "the catalog's recommended steps"


def test_sizes_keep_the_aspect_ratio_within_max_resolution_and_the_multiple(settings: Settings) -> None:
    sd15 = _template(settings, "txt2img")
    fitted = fit_params(sd15, GenerationParams(prompt="p", width=1024, height=768))
    assert (fitted.params.width, fitted.params.height) == (888, 664)
    assert 888 * 664 <= 768 * 768 < 896 * 672, "the largest multiples of 8 at 4:3 within the pixel count"
    assert fitted.notes == ("size 1024×768 → 888×664 (txt2img takes at most 768x768 pixels)",)
    assert fit_params(sd15, GenerationParams(prompt="p", width=512, height=512)).notes == ()
    tiny = _template(settings, "t2i-tiny")
    small = fit_params(tiny, GenerationParams(prompt="p", width=1024, height=768, steps=30, cfg=7.0))
    assert (small.params.width, small.params.height, small.params.steps, small.params.cfg) == (512, 384, 4, 2.0)
    assert "size 1024×768 → 512×384 (t2i-tiny takes at most 512x512 pixels, width 64..512, height 256..512, " \
           "sides in multiples of 64)" in small.notes
    assert "steps 30 → 4 (t2i-tiny takes 1..4)" in small.notes and "CFG 7 → 2 (t2i-tiny takes 1..2)" in small.notes
    tall = fit_params(tiny, GenerationParams(prompt="p", width=128, height=128))
    assert (tall.params.width, tall.params.height) == (256, 256), "scaled up to the height's minimum"


def test_native_sizes_win_and_are_put_on_the_multiple(settings: Settings) -> None:
    qwen = _template(settings, "t2i-qwen-like")
    wide = fit_params(qwen, GenerationParams(prompt="p", negative="n", width=1024, height=768))
    assert (wide.params.width, wide.params.height) == (1472, 1136), "1472x1140 on multiples of 16"
    assert wide.params.negative is None and (wide.params.steps, wide.params.cfg) == (50, 4.0)
    assert wide.notes == ("no negative prompt: t2i-qwen-like has no input for it",
                          "size 1024×768 → 1472×1136 (a native size of t2i-qwen-like)")
    square = fit_params(qwen, GenerationParams(prompt="p", width=512, height=512))
    assert (square.params.width, square.params.height) == (1328, 1328)
    portrait = fit_params(qwen, GenerationParams(prompt="p", width=640, height=960))
    assert (portrait.params.width, portrait.params.height) == (1056, 1584)
    tall = fit_params(qwen, GenerationParams(prompt="p", width=600, height=1000))
    assert (tall.params.width, tall.params.height) == (928, 1664)


def test_limits_tighter_than_the_catalog_and_the_server_caps_are_met(settings: Settings) -> None:
    template = _template(settings, "t2i-limits")
    fitted = fit_params(template, GenerationParams(prompt="p", width=1024, height=1024), max_steps=25)
    assert (fitted.params.steps, fitted.params.cfg, fitted.params.batch_size) == (25, 5.0, 2)
    assert (fitted.params.width, fitted.params.height) == (768, 768)
    assert fitted.notes == ("batch size 4 → 2 (at most 2 per job)", "steps 40 → 25 (t2i-limits takes 10..25)",
                            "CFG 7 → 5 (t2i-limits takes 1..5)",
                            "size 1024×1024 → 768×768 (t2i-limits takes at most 1024x1024 pixels, width 64..768, "
                            "height 64..768, sides in multiples of 64)")
    check_values(template, fitted.params)


def test_a_workflow_whose_limits_admit_no_size_is_named_with_the_image_and_the_value(
    settings: Settings, user_dir: Path
) -> None:
    write_workflow(user_dir, "t2i-broken", limits={"width": {"min": 100, "max": 120, "multiple_of": 64}},
                   catalog=FIT_WORKFLOWS["t2i-tiny"][2])
    template = _template(settings, "t2i-broken")
    with pytest.raises(FitError, match=r"takes no width: a multiple of 64 within 100\.\.120 does not exist"):
        fit_params(template, GenerationParams(prompt="p", width=512, height=512))
    route = RouteChoice(workflow="t2i-broken", reason="chosen by you", seconds=3, cost=0.002, vram_gb=2)
    with pytest.raises(DesignError, match=r"^image 2 \(thumbnail: a cup\) cannot be made with workflow 't2i-broken': "
                                          r"workflow 't2i-broken' takes no width"):
        planned_design(Brief(purpose="thumbnail", subject="a cup"), route, template, settings, owner="ana", key="k",
                       number=2)


def _assert_fits(design_params: GenerationParams, template: WorkflowTemplate, purpose: str) -> None:
    """The design holds only values the workflow takes, at about the purpose's aspect ratio."""
    set_values = {k for k, v in design_params.model_dump().items() if v is not None}
    assert set_values <= {"prompt", *template.accepts}, (template.name, set_values - set(template.accepts))
    width, height = PURPOSE_LOOK[purpose][1]
    assert design_params.width is not None and design_params.height is not None
    assert abs(math.log(design_params.width / design_params.height * height / width)) < 0.05, (
        template.name, purpose, design_params.width, design_params.height)


def test_every_plan_passes_the_ledger_and_the_worker(
    settings: Settings, user_dir: Path
) -> None:
    """Purpose × quality tier × free VRAM × time target, routed by the real router over the workflow library (the
    shipped workflows and the user's folder, as the supervisor routes), then every workflow forced for every
    purpose: each design is planned as the ledger plans it and rendered as the worker renders it."""
    library = load_library(settings)
    assert not library.errors, library.errors
    pool = [t.name for t in library.templates if t.catalog is not None and t.catalog.task == "txt2img"]
    assert set(pool) == {*SHIPPED_TXT2IMG, *FIT_WORKFLOWS}
    templates = {name: _template(settings, name) for name in pool}
    routed: dict[str, int] = dict.fromkeys(pool, 0)
    refused: list[tuple[str, str, float | None]] = []
    planned = 0
    for purpose, tier, vram, target in itertools.product(PURPOSES, TIERS, VRAM, TARGETS):
        try:
            route = choose_route(purpose, vram_free_gb=vram, quality=None if tier == "auto" else tier,
                                 target_seconds=target, library=library)
        except WorkflowError as exc:  # nothing of that tier fits in that VRAM: the router says so, nothing is planned
            assert "GB free" in str(exc), exc
            refused.append((purpose, tier, vram))
            continue
        routed[route.workflow] += 1
        template = templates[route.workflow]
        design = planned_design(Brief(purpose=purpose, subject="a copper kettle"), route, template, settings,
                                owner="ana", key=f"{purpose}-{tier}-{vram}-{target}", number=1)
        _assert_fits(design.params, template, purpose)
        planned += 1
    assert sum(1 for n in routed.values() if n) >= 5, routed  # and every workflow is forced for every purpose below
    assert refused and all(vram is not None and (vram < 12 or tier == "ultra") for _, tier, vram in refused), refused
    for purpose, name in itertools.product(PURPOSES, pool):  # forced: `workflow` named by the person
        route = choose_route(purpose, workflow=name, vram_free_gb=None, library=library)
        template = templates[name]
        design = planned_design(Brief(purpose=purpose, subject="a kingfisher on a branch"), route, template,
                                settings, owner="ana", key=f"{purpose}-{name}", number=1)
        _assert_fits(design.params, template, purpose)
        if "negative" not in template.bindings:  # none written (a library prompt's would be left out, with a note)
            assert design.params.negative is None and not any("no negative prompt" in n for n in design.fitted)
        prompt = design.params.prompt
        if prompt_style_of(template) == "natural":
            assert prompt.startswith("A kingfisher on a branch.") and ":1.2)" not in prompt, (name, prompt)
        else:
            assert prompt.startswith("(kingfisher on a branch:1.2)"), (name, prompt)
        assert ("studio lighting" in prompt) == (purpose == "hero"), (purpose, prompt)
        planned += 1
    assert planned == len(PURPOSES) * (len(TIERS) * len(VRAM) * len(TARGETS) + len(pool)) - len(refused)


def test_the_shipped_sd15_workflows_fit_hero_and_lifestyle_images(settings: Settings) -> None:
    """The issue's first failure: quality fast/medium, or little VRAM, put hero and lifestyle images on 768x768 SD
    workflows; they now plan at their largest size with the purpose's aspect ratio."""
    for quality, vram in (("fast", 16.0), ("medium", 16.0), (None, 5.0)):
        for purpose in ("hero", "lifestyle"):
            route = choose_route(purpose, vram_free_gb=vram, quality=quality)
            assert route.workflow in {"txt2img", "txt2img-turbo"}
            design = planned_design(Brief(purpose=purpose, subject="a kettle"), route,
                                    load_workflow(route.workflow), settings, owner="ana", key="k", number=1)
            size = (design.params.width, design.params.height)
            if route.workflow == "txt2img-turbo":  # SDXL-Turbo: its one native size, or its pixel count at 4:3
                assert size == ((512, 512) if purpose == "hero" else (584, 440)), (route.workflow, size)
            else:
                assert size == ((768, 768) if purpose == "hero" else (888, 664)), (route.workflow, size)
            assert design.fitted and design.fitted[0].startswith(f"size {PURPOSE_LOOK[purpose][1][0]}×")
