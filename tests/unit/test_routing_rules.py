"""The router with the user's models_config.json, their own workflows and their servers' model files: which rule
decides the seed's example requests, what lost and why, and workflows no server can run never chosen."""

from __future__ import annotations

from pathlib import Path

import pytest

from atelier.agents.cost_router import UNKNOWN_SECONDS, RouteChoice, choose_route
from atelier.agents.route_request import parse_route_request
from atelier.chat.chat_tab import workflow_choices
from atelier.tools.catalog import list_templates, task_of
from atelier.tools.comfyui.model_inventory import missing_on, unready_reason
from atelier.tools.errors import WorkflowError
from atelier.tools.models_config import load_models_config
from atelier.tools.settings import load_settings
from atelier.tools.toolkit import ListWorkflowsArgs, ToolContext, list_workflows
from atelier.tools.workflow_library import WorkflowLibrary, build_library
from tests.user_workflows import QWEN_FILE, S12_CONFIG, make_user_workflows

# The files of the shipped workflows and the Qwen copies (the tests' "fully installed" server).
EVERYTHING = {"checkpoints": {"v1-5-pruned-emaonly.safetensors", "sd_xl_turbo_1.0_fp16.safetensors",
                              "sd_xl_base_1.0.safetensors", QWEN_FILE,
                              "qwen_image_edit_2509_fp8_e4m3fn.safetensors"},
              "upscale_models": {"RealESRGAN_x4plus.pth"}}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The user's workflows: Qwen-Image-like tiers and two without a catalog entry."""
    return make_user_workflows(tmp_path / "workflows")


@pytest.fixture
def library(folder: Path) -> WorkflowLibrary:
    """Shipped + the user's workflows with the §12 models config applied."""
    return build_library(list_templates([folder]), load_models_config(S12_CONFIG), S12_CONFIG)


def route(library: WorkflowLibrary, text: str, vram: float | None = None, **options: object) -> RouteChoice:
    """The route for a request in words (VRAM: `vram`, else what the words say)."""
    assert library.config is not None
    request = parse_route_request(text, library.config.routing_rules.by_purpose)
    free = vram if vram is not None else request.vram_free_gb
    return choose_route(request.purpose, urgency=request.urgency, vram_free_gb=free, budget=request.budget,
                        library=library, **options)  # type: ignore[arg-type]


# The seed's example requests (integration-ideas §12) on the user's RTX 5080 (16 GB) unless the request says.
EXAMPLES = [
    ("urgent thumbnail", 16, "qwen-image-fast", "routing_rules.by_purpose.thumbnail → qwen-image-fast"),
    ("hero image with 16 GB free", None, "qwen-image-ultra", "routing_rules.by_purpose.hero_image → qwen-image-ultra"),
    ("social media post", 16, "qwen-image",
     "routing_rules.by_purpose.social_media → qwen-image-standard (workflow qwen-image)"),
    ("preview", 16, "txt2img-turbo", "routing_rules.by_purpose.preview → sdxl-turbo (workflow txt2img-turbo)"),
    ("an image with low VRAM, 6 GB free", None, "qwen-image-fast",
     "routing_rules.by_available_vram.low → qwen-image-fast"),
]


@pytest.mark.parametrize(("text", "vram", "workflow", "rule"), EXAMPLES)
def test_the_seeds_example_requests_are_decided_by_their_rule(library: WorkflowLibrary, text: str,
                                                              vram: float | None, workflow: str, rule: str) -> None:
    chosen = route(library, text, vram, inventories=[EVERYTHING])
    assert (chosen.workflow, chosen.rule) == (workflow, rule)
    assert rule in chosen.reason, "the reason names the deciding rule"
    others = {a.workflow: a.why for a in chosen.alternatives}
    assert workflow not in others and {"my-sketch", "txt2img", "txt2img-hq"} <= set(others)
    assert "qwen-image-edit" not in others and "my-restyle" not in others, "only text-to-image workflows compete"


def test_figures_come_from_the_file(library: WorkflowLibrary) -> None:
    fast = route(library, "urgent thumbnail", 16)
    assert (fast.seconds, fast.cost, fast.vram_gb) == (30, 0.01, 6)
    low = route(library, "an image with 6 GB free")
    assert low.rules_skipped == ["routing_rules.by_urgency.standard → qwen-image-standard (workflow qwen-image) "
                                 "did not apply: qwen-image: needs 8 GB of VRAM, 6 GB free"]
    assert {a.workflow: a.why for a in low.alternatives}["qwen-image-ultra"] == "needs 14 GB of VRAM, 6 GB free"


def test_a_purpose_rule_yields_to_urgency_when_its_model_is_too_slow(library: WorkflowLibrary) -> None:
    urgent_hero = route(library, "urgent hero image", 16)
    assert urgent_hero.workflow == "txt2img-turbo"
    assert urgent_hero.rule == "routing_rules.by_urgency.immediate → sdxl-turbo (workflow txt2img-turbo)"
    assert urgent_hero.rules_skipped == ["routing_rules.by_purpose.hero_image → qwen-image-ultra did not apply: "
                                         "~100 s, more than immediate urgency allows (30 s)"]
    plain = route(library, "a poster", 16)
    assert plain.rule == "routing_rules.by_urgency.standard → qwen-image-standard (workflow qwen-image)"
    hero_small_card = route(library, "hero image", 10)
    assert hero_small_card.rule == "routing_rules.by_urgency.standard → qwen-image-standard (workflow qwen-image)"


def test_budget_target_and_tier_rule_a_rules_model_out(library: WorkflowLibrary) -> None:
    cheap = route(library, "hero image under 0.02", 16)
    assert cheap.workflow == "qwen-image"
    assert cheap.rules_skipped[0] == ("routing_rules.by_purpose.hero_image → qwen-image-ultra did not apply: "
                                      "qwen-image-ultra: costs 0.05 per image, over the budget of 0.02")
    quick = route(library, "hero image", 16, target_seconds=40)
    assert (quick.workflow, quick.rule, quick.seconds) == ("txt2img-hq", None, 25)
    assert quick.rules_skipped[0].endswith("did not apply: ~100 s, over your target of 40 s")
    assert "stepped down from qwen-image-ultra (100 s) to fit a target of 40 s" in quick.reason
    tier = route(library, "hero image", 16, quality="fast")
    assert (tier.workflow, tier.rule) == ("txt2img-turbo", None)
    assert len(tier.rules_skipped) == 3 and all(s.endswith("not of the fast tier you asked for")
                                                for s in tier.rules_skipped)


def test_free_vram_unknown_skips_the_vram_tier_rule(library: WorkflowLibrary) -> None:
    chosen = route(library, "a poster under 0.015")
    assert chosen.rules_skipped[-1] == ("routing_rules.by_available_vram did not apply: free VRAM unknown (no server "
                                        "answered)")
    assert chosen.rule is None and chosen.workflow == "txt2img-hq", "the catalog heuristics decided"


def test_a_named_workflow_wins_over_every_rule(library: WorkflowLibrary) -> None:
    chosen = route(library, "urgent thumbnail", 16, workflow="txt2img-hq")
    assert chosen.workflow == "txt2img-hq" and "chosen by you" in chosen.reason and chosen.rule is None


def test_workflows_no_server_can_run_are_never_chosen(library: WorkflowLibrary) -> None:
    without_qwen = {folder: names - {QWEN_FILE} for folder, names in EVERYTHING.items()}
    chosen = route(library, "urgent thumbnail", 16, inventories=[without_qwen])
    assert chosen.workflow == "txt2img-turbo"
    assert chosen.rules_skipped[0] == ("routing_rules.by_purpose.thumbnail → qwen-image-fast did not apply: "
                                       "qwen-image-fast: its model files are not installed (the server lacks "
                                       f"checkpoints/{QWEN_FILE}): put them in ComfyUI/models/")
    lost = {a.workflow: a.why for a in chosen.alternatives}
    assert lost["qwen-image-ultra"].startswith("its model files are not installed")
    with pytest.raises(WorkflowError, match=r"workflow 'qwen-image' cannot run on your servers now: .*"
                                            rf"checkpoints/{QWEN_FILE}"):
        route(library, "hero image", 16, workflow="qwen-image", inventories=[without_qwen])
    assert route(library, "urgent thumbnail", 16, inventories=[without_qwen, EVERYTHING]).workflow == \
        "qwen-image-fast", "one server with every file is enough"


def test_readiness_is_a_function_of_the_files_listed(folder: Path) -> None:
    qwen = {t.name: t for t in list_templates([folder]).templates}["qwen-image"]
    needs = {"checkpoints": [QWEN_FILE], "vae": ["ae.safetensors"]}
    assert missing_on(needs, {"checkpoints": {QWEN_FILE}}) == [("vae", "ae.safetensors")]
    assert unready_reason(qwen, []) is None, "no inventory: nothing is known, nothing ruled out"
    assert unready_reason(qwen, [EVERYTHING]) is None
    two = unready_reason(qwen, [{"checkpoints": set()}, {"checkpoints": {"other.safetensors"}}])
    assert two == (f"its model files are not installed (none of the 2 servers has all; the closest lacks "
                   f"checkpoints/{QWEN_FILE}): put them in ComfyUI/models/")


def test_a_user_workflow_without_a_catalog_entry_is_listed_and_routed(folder: Path, tmp_path: Path) -> None:
    listing = list_templates([folder])
    tasks = {t.name: task_of(t) for t in listing.templates if t.catalog is None}
    assert tasks == {"my-sketch": "txt2img", "my-restyle": "img2img"}, "the task is read off the graph"
    library = build_library(listing)
    named = choose_route(None, workflow="my-sketch", library=library)
    assert named.seconds == UNKNOWN_SECONDS and named.cost == 0
    assert named.reason.startswith("my-sketch: your workflow without a catalog entry (quality, VRAM and cost "
                                   "unknown), time unknown until it has run (60 s assumed), chosen by you")
    standard = choose_route(None, library=library, vram_free_gb=24)
    assert standard.workflow != "my-sketch"
    assert {a.workflow: a.why for a in standard.alternatives}["my-sketch"].startswith("no catalog entry")
    learned = choose_route(None, urgency="immediate", library=library, measured={"my-sketch": 0.8})
    assert learned.workflow == "my-sketch" and "~0.8 s measured" in learned.reason, "its time is learned from runs"
    edit = choose_route(None, task="img2img", workflow="my-restyle", library=library)
    assert edit.workflow == "my-restyle"
    settings = load_settings(data_dir=tmp_path / "d", workflows_dir=folder)
    choices = dict((name, label) for label, name in workflow_choices(settings))
    assert choices["my-sketch"] == "my-sketch — yours, no catalog entry" and choices["txt2img"] == "txt2img — medium"
    assert "my-restyle" not in choices and "img2img" not in choices and "qwen-image-edit" not in choices


@pytest.mark.asyncio
async def test_mcp_list_workflows_shows_the_users_workflows_and_models(folder: Path, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "d", workflows_dir=folder, models_config=S12_CONFIG)
    ctx = ToolContext(settings=settings, ledger=None, owner="ana")  # type: ignore[arg-type]
    listed = {info.name: info for info in await list_workflows(ctx, ListWorkflowsArgs())}
    assert (listed["my-sketch"].task, listed["my-sketch"].quality) == ("txt2img", None)
    assert listed["my-restyle"].task == "img2img"
    assert (listed["qwen-image"].model, listed["qwen-image"].vram_gb, listed["qwen-image"].quality) == (
        "qwen-image-standard", 8, "high")
