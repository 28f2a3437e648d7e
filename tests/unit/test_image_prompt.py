"""Image prompts per model family: sentences for Qwen-Image-like workflows, weighted tags for SD1.5/SDXL, a negative
prompt only where the workflow has a negative input, product looks only for product purposes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atelier.agents.cost_router import RouteChoice
from atelier.agents.image_prompt import PictureBrief, write_prompt
from atelier.agents.planner import Brief
from atelier.agents.visual_designer import BASE_NEGATIVE, design_image
from atelier.tools.comfyui.prompt_style import family_of_file, prompt_style_of
from atelier.tools.comfyui.templates import WorkflowTemplate, load_workflow
from atelier.tools.memory.style import StyleProfile
from atelier.workflows import SHIPPED_DIR

HERON = PictureBrief(subject="a grey heron catching a fish", setting="in shallow water at the edge of a reed marsh",
                     mood="calm, soft morning light")
PRODUCT_WORDS = ("studio lighting", "centred", "clean background", "hero shot", "product")


def _design(workflow: str, brief: Brief, style: StyleProfile | None = None) -> tuple[str, str | None]:
    """The prompt and negative the designer writes for `brief` on a shipped workflow."""
    route = RouteChoice(workflow=workflow, reason="chosen by you", seconds=10, cost=0.01, vram_gb=8)
    params = design_image(brief, route, style).params
    return params.prompt, params.negative


def test_shipped_workflows_name_their_prompt_style() -> None:
    styles = {path.name.removesuffix(".meta.json"): json.loads(path.read_text())["catalog"].get("prompt_style")
              for path in SHIPPED_DIR.glob("*.meta.json")}
    assert styles == {"qwen-image": "natural", "qwen-image-ultra": "natural", "qwen-image-fast": "natural",
                      "qwen-image-edit": "natural", "txt2img": "tags", "txt2img-hq": "tags", "txt2img-turbo": "tags",
                      "img2img": "tags", "upscale": None}, "upscale takes no prompt"


def test_qwen_image_gets_sentences_without_weights_and_no_negative_when_it_has_no_input() -> None:
    picture = Brief.of_picture("illustration", HERON)
    prompt, negative = _design("qwen-image-fast", picture)
    assert prompt == ("A grey heron catching a fish in shallow water at the edge of a reed marsh. "
                      "Calm, soft morning light.")
    assert negative is None and "negative" not in load_workflow("qwen-image-fast").bindings
    standard, with_input = _design("qwen-image", picture)
    assert standard == prompt and with_input == "blurry, low quality, watermark, deformed", (
        "qwen-image takes a negative; it leaves out 'text', which Qwen-Image is asked to draw")


def test_sdxl_gets_weighted_tags_and_a_negative() -> None:
    prompt, negative = _design("txt2img-hq", Brief.of_picture("illustration", HERON))
    assert prompt == ("(grey heron catching a fish:1.2), shallow water at the edge of a reed marsh, calm, "
                      "soft morning light")
    assert negative == BASE_NEGATIVE


@pytest.mark.parametrize("workflow", ["qwen-image", "txt2img-hq", "txt2img"])
def test_an_illustration_gets_no_product_look_and_a_product_gets_its_look(workflow: str) -> None:
    prompt, _ = _design(workflow, Brief.of_picture("illustration", HERON))
    assert not any(word in prompt.lower() for word in PRODUCT_WORDS), prompt
    hero, _ = _design(workflow, Brief(purpose="hero", subject="a copper kettle", notes="on dark slate"))
    assert "studio lighting" in hero and "clean background" in hero
    if prompt_style_of(load_workflow(workflow)) == "natural":
        assert hero == ("A copper kettle on dark slate. A hero shot: the product centred on a clean background, in "
                        "studio lighting.")
    else:
        assert hero == "(copper kettle:1.2), dark slate, hero shot, centred product, clean background, studio lighting"


def test_the_persons_style_goes_in_each_familys_form() -> None:
    style = StyleProfile(owner="ana", rated=3, liked_modifiers=[("watercolor", 4.5), ("soft light", 3.5)],
                         disliked_modifiers=[("neon", 1.5)])
    brief = Brief.of_picture("illustration", HERON)
    sentences, negative = _design("qwen-image", brief, style)
    assert sentences.endswith(" Style: watercolor, soft light.")
    assert negative == "blurry, low quality, watermark, deformed, neon"
    tags, tag_negative = _design("txt2img", brief, style)
    assert tags.endswith(", watercolor, soft light") and tag_negative == f"{BASE_NEGATIVE}, neon"


def test_tags_escape_the_models_parentheses_and_keep_a_weight_someone_wrote() -> None:
    escaped = write_prompt(PictureBrief(subject="a mug (blue)", mood="calm"), "illustration", "tags").prompt
    assert escaped == r"(mug \(blue\):1.2), calm"
    kept = write_prompt(PictureBrief(subject="(red fox:1.4) in snow"), "illustration", "tags").prompt
    assert kept == "(red fox:1.4) in snow"
    sentence = write_prompt(PictureBrief(subject="a kettle", setting="steam rising."), "product", "natural",
                            negative_input=False)
    assert sentence.negative is None and sentence.prompt.startswith("A kettle, steam rising. A product photograph")


def test_a_planners_brief_without_a_picture_uses_its_notes_as_the_setting() -> None:
    prompt, _ = _design("qwen-image", Brief(purpose="lifestyle", subject="a copper espresso cup",
                                            notes="in a cafe at morning"))
    assert prompt == ("A copper espresso cup in a cafe at morning. A lifestyle scene with the product in use, in "
                      "natural light with a shallow depth of field.")


def _without_style(template: WorkflowTemplate, models: dict[str, list[str]], ckpt: str | None = None
                   ) -> WorkflowTemplate:
    """`template` with no prompt_style in its catalog, other model files, and (optionally) another checkpoint."""
    assert template.catalog is not None
    entry = template.catalog.model_copy(update={"prompt_style": None, "models": models, "model_files": []})
    graph = json.loads(json.dumps(template.graph))
    if ckpt is not None:
        for node in graph.values():
            if "ckpt_name" in node["inputs"]:
                node["inputs"]["ckpt_name"] = ckpt
    return template.model_copy(update={"catalog": entry, "graph": graph})


def test_without_a_prompt_style_the_model_files_decide(tmp_path: Path) -> None:
    sd15 = load_workflow("txt2img")
    assert prompt_style_of(_without_style(sd15, {"checkpoints": ["qwen_image_fp8_e4m3fn.safetensors"]})) == "natural"
    assert prompt_style_of(_without_style(sd15, {"checkpoints": ["sd_xl_base_1.0.safetensors"]})) == "tags"
    unknown = _without_style(sd15, {}, ckpt="my_model.safetensors")
    assert prompt_style_of(unknown) == "natural", "a model neither list knows is prompted in sentences"
    from_graph = _without_style(sd15, {}, ckpt="juggernautXL_v9.safetensors")
    assert prompt_style_of(from_graph) == "tags", "no catalog files: the graph's checkpoint"
    uncatalogued = sd15.model_copy(update={"catalog": None})
    assert prompt_style_of(uncatalogued) == "tags", "the shipped SD1.5 graph loads v1-5-pruned-emaonly"


@pytest.mark.parametrize(("name", "style"), [
    ("qwen_image_edit_2509_fp8_e4m3fn.safetensors", "natural"), ("flux1-dev-fp8.safetensors", "natural"),
    ("sd3.5_large.safetensors", "natural"), ("v1-5-pruned-emaonly.safetensors", "tags"),
    ("sd_xl_turbo_1.0_fp16.safetensors", "tags"), ("ponyDiffusionV6XL.safetensors", "tags"),
    ("RealESRGAN_x4plus.pth", None), ("models/checkpoints/my_model.ckpt", None),
])
def test_model_file_names_give_the_family_away(name: str, style: str | None) -> None:
    assert family_of_file(name) == style
