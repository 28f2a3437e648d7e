"""Workflow templates: shipped graphs ComfyUI would accept, sidecar bindings, inference, rendering, checks."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from atelier.tools.comfyui.templates import (
    PARAM_KINDS,
    Binding,
    WorkflowTemplate,
    check_against_object_info,
    check_bindings_against_object_info,
    load_workflow,
    random_seed,
    render,
    required_models,
)
from atelier.tools.errors import WorkflowError
from atelier.tools.schemas import GenerationParams
from atelier.workflows import SHIPPED_DIR

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
SHIPPED = ["txt2img", "txt2img-turbo", "txt2img-hq", "img2img", "upscale",
           "qwen-image", "qwen-image-ultra", "qwen-image-fast", "qwen-image-edit"]
QWEN = {"diffusion_models": ["qwen_image_fp8_e4m3fn.safetensors"],
        "text_encoders": ["qwen_2.5_vl_7b_fp8_scaled.safetensors"], "vae": ["qwen_image_vae.safetensors"]}
MODELS = {
    "txt2img": {"checkpoints": ["v1-5-pruned-emaonly.safetensors"]},
    "txt2img-turbo": {"checkpoints": ["sd_xl_turbo_1.0_fp16.safetensors"]},
    "txt2img-hq": {"checkpoints": ["sd_xl_base_1.0.safetensors"]},
    "img2img": {"checkpoints": ["v1-5-pruned-emaonly.safetensors"]},
    "upscale": {"upscale_models": ["RealESRGAN_x4plus.pth"]},
    "qwen-image": QWEN,
    "qwen-image-ultra": QWEN,
    "qwen-image-fast": {**QWEN, "loras": ["Qwen-Image-Lightning-8steps-V1.0.safetensors"]},
    "qwen-image-edit": {**QWEN, "diffusion_models": ["qwen_image_edit_2509_fp8_e4m3fn.safetensors"]},
}
# The package the graphs (and their model facts) were converted from, and the shipped workflows taken from it.
TEMPLATES_PACKAGE = "comfyui-workflow-templates-json 0.1.123"
FROM_TEMPLATES = {"txt2img-turbo": "sdxlturbo_example", "qwen-image": "image_qwen_image",
                  "qwen-image-ultra": "image_qwen_image", "qwen-image-fast": "image_qwen_image",
                  "qwen-image-edit": "image_qwen_image_edit_2509"}
# Values of the right kind that every shipped template can take.
VALUES: dict[str, Any] = {
    "prompt": "a red fox in snow, watercolor",
    "negative": "blurry",
    "seed": 123456789,
    "steps": 4,
    "cfg": 5.5,
    "width": 640,
    "height": 384,
    "denoise": 0.5,
    "batch_size": 2,
    "input_image": "atelier_upload_1.png",
}
OBJECT_INFO_TYPES = {"text": {"STRING", "COMBO"}, "int": {"INT"}, "number": {"FLOAT"}}


@pytest.fixture(scope="module")
def object_info() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "tests" / "fakes" / "data" / "object_info.json").read_text())
    return data


def _pairs(template: WorkflowTemplate) -> dict[str, list[tuple[str, str]]]:
    return {param: [(b.node_id, b.input) for b in targets] for param, targets in template.bindings.items()}


def _declared(info: dict[str, Any], class_type: str) -> dict[str, Any]:
    inputs = info[class_type]["input"]
    return {**inputs.get("required", {}), **inputs.get("optional", {})}


def _spec_type(spec: list[Any]) -> str:
    return "COMBO" if isinstance(spec[0], list) else str(spec[0])


def _changed(before: dict[str, Any], after: dict[str, Any]) -> dict[tuple[str, str], Any]:
    changes = {}
    for node_id, node in after.items():
        for name, value in node["inputs"].items():
            if before[node_id]["inputs"].get(name) != value:
                changes[(node_id, name)] = value
    return changes


# ----------------------------------------------------------------------------- shipped templates


def test_param_kinds_cover_every_generation_parameter() -> None:
    assert list(PARAM_KINDS) == list(GenerationParams.model_fields)


def test_every_shipped_workflow_is_listed_here() -> None:
    names = {p.name[: -len(".json")] for p in SHIPPED_DIR.glob("*.json") if not p.name.endswith(".meta.json")}
    assert names == set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflow_passes_object_info(name: str, object_info: dict[str, Any]) -> None:
    template = load_workflow(name)
    assert template.shipped and not template.inferred and template.catalog is not None
    assert check_against_object_info(template.graph, object_info) == []


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflow_only_lacks_its_model_files_on_a_server_without_weights(
    name: str, object_info: dict[str, Any]
) -> None:
    template = load_workflow(name)
    problems = check_against_object_info(template.graph, object_info, check_models=True)
    files = [f for folder in MODELS[name].values() for f in folder]
    assert len(problems) == len(files), problems
    for problem, filename in zip(problems, files, strict=True):
        assert filename in problem and "not one of its options" in problem


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_bindings_point_at_declared_inputs_holding_the_right_kind(
    name: str, object_info: dict[str, Any]
) -> None:
    template = load_workflow(name)
    for param, targets in template.bindings.items():
        assert targets, param
        for target in targets:
            node = template.graph[target.node_id]
            declared = _declared(object_info, node["class_type"])
            assert target.input in declared, (param, target)
            assert _spec_type(declared[target.input]) in OBJECT_INFO_TYPES[PARAM_KINDS[param]], (param, target)
            value = node["inputs"][target.input]
            expected = {"text": str, "int": int, "number": float}[PARAM_KINDS[param]]
            assert isinstance(value, expected) and not isinstance(value, bool), (param, value)
    assert check_bindings_against_object_info(template, object_info) == []


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sidecar_binds_explicitly_and_catalogs_its_models(name: str) -> None:
    sidecar = json.loads((SHIPPED_DIR / f"{name}.meta.json").read_text())
    assert set(sidecar) >= {"bindings", "catalog"}
    assert set(sidecar["bindings"]) <= set(PARAM_KINDS)
    template = load_workflow(name)
    assert template.inference_notes == []
    assert required_models(template) == MODELS[name]
    assert template.catalog is not None and template.catalog.models == MODELS[name]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflow_saves_under_the_atelier_prefix(name: str) -> None:
    template = load_workflow(name)
    saves = [n for n in template.graph.values() if n["class_type"] == "SaveImage"]
    assert [n["inputs"]["filename_prefix"] for n in saves] == [f"atelier/{name}"]


def test_txt2img_is_comfyuis_default_graph() -> None:
    template = load_workflow("txt2img")
    classes = sorted(n["class_type"] for n in template.graph.values())
    assert classes == sorted(
        [
            "KSampler",
            "CheckpointLoaderSimple",
            "EmptyLatentImage",
            "CLIPTextEncode",
            "CLIPTextEncode",
            "VAEDecode",
            "SaveImage",
        ]
    )
    assert _pairs(template)["prompt"] == [("6", "text")] and _pairs(template)["seed"] == [("3", "seed")]


def test_turbo_follows_comfyuis_sdxl_turbo_example() -> None:
    template = load_workflow("txt2img-turbo")
    by_class = {n["class_type"]: n["inputs"] for n in template.graph.values()}
    assert {"SamplerCustom", "SDTurboScheduler", "KSamplerSelect"} <= set(by_class)
    assert by_class["SamplerCustom"]["cfg"] == 1.0
    assert 1 <= by_class["SDTurboScheduler"]["steps"] <= 4
    assert (by_class["EmptyLatentImage"]["width"], by_class["EmptyLatentImage"]["height"]) == (512, 512)
    assert template.catalog is not None and template.catalog.quality == "fast"


def test_img2img_repaints_partly_and_upscale_takes_only_an_image() -> None:
    img2img = load_workflow("img2img")
    sampler = img2img.graph["3"]["inputs"]
    assert sampler["denoise"] < 1 and img2img.graph[sampler["latent_image"][0]]["class_type"] == "VAEEncode"
    assert "width" not in img2img.bindings and "input_image" in img2img.bindings
    assert load_workflow("upscale").accepts == ["input_image"]


def _by_class(template: WorkflowTemplate) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for node in template.graph.values():
        found.setdefault(node["class_type"], []).append(node["inputs"])
    return found


@pytest.mark.parametrize(("name", "steps", "cfg"), [("qwen-image", 20, 4.0), ("qwen-image-ultra", 50, 4.0),
                                                    ("qwen-image-fast", 8, 1.0)])
def test_qwen_image_tiers_follow_comfyuis_template(name: str, steps: int, cfg: float) -> None:
    template = load_workflow(name)
    nodes = _by_class(template)
    [sampler], [latent], [sampling] = nodes["KSampler"], nodes["EmptySD3LatentImage"], nodes["ModelSamplingAuraFlow"]
    assert (sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"]) == (steps, cfg, "euler",
                                                                                                "simple")
    assert (latent["width"], latent["height"]) == (1328, 1328) and sampling["shift"] == 3.1
    assert nodes["CLIPLoader"][0]["type"] == "qwen_image" and nodes["UNETLoader"][0]["weight_dtype"] == "default"
    assert template.catalog is not None and template.catalog.recommended_steps == steps
    assert template.catalog.recommended_cfg == cfg and template.catalog.resolution_multiple == 16
    assert "1328x1328" in template.catalog.native_resolutions


def test_qwen_image_fast_takes_the_lightning_lora_and_no_negative_prompt() -> None:
    template = load_workflow("qwen-image-fast")
    nodes = _by_class(template)
    [lora] = nodes["LoraLoaderModelOnly"]
    assert lora["lora_name"] == "Qwen-Image-Lightning-8steps-V1.0.safetensors" and lora["strength_model"] == 1.0
    sampler = template.graph["3"]["inputs"]
    assert template.graph[sampler["negative"][0]]["class_type"] == "ConditioningZeroOut"
    assert "negative" not in template.bindings and "negative" in load_workflow("qwen-image").bindings
    with pytest.raises(WorkflowError, match="'qwen-image-fast' has no input for negative"):
        render(template, GenerationParams(prompt="x", negative="blurry"))
    with pytest.raises(WorkflowError, match=r"cfg 4\.0 is outside .*\(1\.\.1\)"):
        render(template, GenerationParams(prompt="x", cfg=4.0))


def test_qwen_image_sizes_go_in_multiples_of_16_up_to_the_tiers_maximum() -> None:
    with pytest.raises(WorkflowError, match=r"width 1140 is not a multiple of 16.*use 1136 or 1152"):
        render(load_workflow("qwen-image"), GenerationParams(prompt="x", width=1140, height=1472))
    with pytest.raises(WorkflowError, match="1328x1328"):
        render(load_workflow("qwen-image"), GenerationParams(prompt="x", width=2048, height=2048))
    graph = render(load_workflow("qwen-image-ultra"), GenerationParams(prompt="x", width=2048, height=2048))
    assert (graph["58"]["inputs"]["width"], graph["58"]["inputs"]["height"]) == (2048, 2048)


def test_qwen_image_edit_feeds_its_one_input_image_to_both_encoders_and_the_latent() -> None:
    template = load_workflow("qwen-image-edit")
    assert template.catalog is not None and template.catalog.task == "img2img"
    assert template.accepts == ["prompt", "negative", "seed", "steps", "cfg", "denoise", "input_image"]
    [(loader, _)] = [(n, v) for n, v in template.graph.items() if v["class_type"] == "LoadImage"]
    scaled = [n for n, v in template.graph.items() if v["class_type"] == "FluxKontextImageScale"]
    assert len(scaled) == 1 and template.graph[scaled[0]]["inputs"]["image"] == [loader, 0]
    encoders = {n: v["inputs"] for n, v in template.graph.items() if v["class_type"] == "TextEncodeQwenImageEditPlus"}
    assert set(encoders) == {"110", "111"} and all(e["image1"] == [scaled[0], 0] for e in encoders.values())
    assert not any("image2" in e or "image3" in e for e in encoders.values())
    sampler = template.graph["3"]["inputs"]
    assert (sampler["positive"], sampler["negative"]) == (["111", 0], ["110", 0])
    assert template.graph[sampler["latent_image"][0]]["inputs"]["pixels"] == [scaled[0], 0]
    sidecar = json.loads((SHIPPED_DIR / "qwen-image-edit.meta.json").read_text())
    assert "image2" in sidecar["notes"] and "ATELIER_WORKFLOWS_DIR" in sidecar["notes"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_catalog_figures_agree_with_the_graph(name: str) -> None:
    template = load_workflow(name)
    entry = template.catalog
    assert entry is not None
    if entry.model_files:
        assert {(f.folder, f.name) for f in entry.model_files} == {
            (folder, file) for folder, files in entry.models.items() for file in files}
        assert all(f.size_gb and f.url and f.url.startswith("https://") for f in entry.model_files)
    for size in entry.native_resolutions:
        width, height = (int(n) for n in size.split("x"))
        assert width % entry.resolution_multiple == 0 and height % entry.resolution_multiple == 0, size
        assert width * height <= entry.max_pixels, size
    for side in ("width", "height"):
        limit = template.limits.get(side)
        if side in template.bindings:
            assert (limit.multiple_of if limit and limit.multiple_of else 8) == entry.resolution_multiple
    defaults = {p: render(template, GenerationParams(prompt="x"))[t[0].node_id]["inputs"][t[0].input]
                for p, t in template.bindings.items()}
    if entry.recommended_steps is not None and "steps" in defaults:
        assert defaults["steps"] == entry.recommended_steps
    if entry.recommended_cfg is not None:
        assert defaults["cfg"] == entry.recommended_cfg
    if name in FROM_TEMPLATES:
        assert entry.source is not None and FROM_TEMPLATES[name] in entry.source
        assert TEMPLATES_PACKAGE in entry.source and entry.model_files and entry.recommended_cfg is not None


# ----------------------------------------------------------------------------- render


def _value_for(template: WorkflowTemplate, param: str) -> Any:
    """VALUES[param], or the sidecar limit's bound nearest to it when the workflow limits that parameter."""
    value, limit = VALUES[param], template.limits.get(param)
    if limit is not None and limit.max is not None and value > limit.max:
        return type(value)(limit.max)
    if limit is not None and limit.min is not None and value < limit.min:
        return type(value)(limit.min)
    return value


@pytest.mark.parametrize("name", SHIPPED)
def test_render_sets_exactly_the_bound_inputs(name: str, object_info: dict[str, Any]) -> None:
    template = load_workflow(name)
    before = copy.deepcopy(template.graph)
    values = {p: _value_for(template, p) for p in template.bindings if p != "prompt"}
    params = GenerationParams(prompt="fox", **values)
    graph = render(template, params)
    expected = {
        (b.node_id, b.input): ("fox" if p == "prompt" else values[p])
        for p, targets in template.bindings.items()
        for b in targets
        if before[b.node_id]["inputs"][b.input] != values.get(p)  # a limit may pin it to the graph's own (cfg 1)
    }
    assert _changed(before, graph) == expected
    assert template.graph == before, "render must not touch the template"
    assert check_against_object_info(graph, object_info) == []


def test_render_with_nothing_set_changes_only_the_prompt() -> None:
    template = load_workflow("txt2img")
    graph = render(template, GenerationParams(prompt="a lighthouse"))
    assert _changed(template.graph, graph) == {("6", "text"): "a lighthouse"}


def test_render_never_invents_a_seed_but_writes_the_callers() -> None:
    template = load_workflow("txt2img-turbo")
    assert render(template, GenerationParams(prompt="x"))["13"]["inputs"]["noise_seed"] == 0
    seed = random_seed()
    assert render(template, GenerationParams(prompt="x", seed=seed))["13"]["inputs"]["noise_seed"] == seed


def test_random_seed_is_a_fresh_32_bit_number() -> None:
    seeds = {random_seed() for _ in range(50)}
    assert len(seeds) > 45 and all(0 <= s <= 2**32 - 1 for s in seeds)


def test_render_writes_floats_for_cfg_and_denoise() -> None:
    graph = render(load_workflow("txt2img"), GenerationParams(prompt="x", cfg=7, denoise=1))
    assert isinstance(graph["3"]["inputs"]["cfg"], float) and isinstance(graph["3"]["inputs"]["denoise"], float)


def test_render_refuses_a_parameter_the_workflow_has_no_input_for() -> None:
    with pytest.raises(WorkflowError) as caught:
        render(load_workflow("upscale"), GenerationParams(prompt="x", width=512))
    message = str(caught.value)
    assert "'upscale' has no input for width" in message and "it accepts: input_image" in message


def test_render_drops_the_mandatory_prompt_when_the_workflow_has_none() -> None:
    template = load_workflow("upscale")
    graph = render(template, GenerationParams(prompt="ignored"), uploaded_image="in.png")
    assert _changed(template.graph, graph) == {("1", "image"): "in.png"}


def test_render_uses_input_image_as_a_server_name_without_an_upload() -> None:
    graph = render(load_workflow("img2img"), GenerationParams(prompt="x", input_image="already_there.png"))
    assert graph["10"]["inputs"]["image"] == "already_there.png"
    graph = render(
        load_workflow("img2img"), GenerationParams(prompt="x", input_image="/tmp/a.png"), uploaded_image="a.png"
    )
    assert graph["10"]["inputs"]["image"] == "a.png"


def test_render_refuses_an_uploaded_image_for_a_text_only_workflow() -> None:
    with pytest.raises(WorkflowError, match="no input for input_image"):
        render(load_workflow("txt2img"), GenerationParams(prompt="x"), uploaded_image="a.png")


def test_render_wants_sizes_in_multiples_of_8() -> None:
    with pytest.raises(WorkflowError) as caught:
        render(load_workflow("txt2img"), GenerationParams(prompt="x", width=514))
    assert "width 514 is not a multiple of 8" in str(caught.value) and "use 512 or 520" in str(caught.value)


def test_render_refuses_more_pixels_than_the_tier_makes_well() -> None:
    with pytest.raises(WorkflowError) as caught:
        render(load_workflow("txt2img"), GenerationParams(prompt="x", width=1024, height=1024))
    assert "768x768" in str(caught.value)
    graph = render(load_workflow("txt2img-hq"), GenerationParams(prompt="x", width=1216, height=832))
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (1216, 832)


def test_render_keeps_to_the_sidecar_limits() -> None:
    with pytest.raises(WorkflowError, match=r"steps 20 is outside .*1\.\.10"):
        render(load_workflow("txt2img-turbo"), GenerationParams(prompt="x", steps=20))


# ----------------------------------------------------------------------------- inference


@pytest.mark.parametrize("name", SHIPPED)
def test_inference_finds_the_sidecar_bindings_of_every_shipped_graph(name: str, tmp_path: Path) -> None:
    shutil.copy(SHIPPED_DIR / f"{name}.json", tmp_path / f"{name}.json")
    inferred = load_workflow(str(tmp_path / f"{name}.json"))
    assert inferred.inferred and inferred.catalog is None and not inferred.shipped
    assert inferred.bindings == load_workflow(name).bindings
    assert inferred.inference_notes


def test_inference_notes_say_what_was_bound_and_why(tmp_path: Path) -> None:
    shutil.copy(SHIPPED_DIR / "txt2img.json", tmp_path / "mine.json")
    notes = load_workflow(str(tmp_path / "mine.json")).inference_notes
    assert "prompt → node 6 (CLIPTextEncode 'Positive prompt') input text: feeds KSampler 3's positive" in notes
    assert "seed → node 3 (KSampler) input seed: the seed of KSampler 3" in notes


def test_a_plain_api_export_with_default_titles_infers_like_the_shipped_txt2img() -> None:
    template = load_workflow(str(DATA / "default_api_export.json"))
    assert template.name == "default_api_export" and template.inferred
    assert template.bindings == load_workflow("txt2img").bindings


def test_titles_pick_the_prompt_among_combined_encoders() -> None:
    template = load_workflow(str(DATA / "titled_combine.json"))
    assert _pairs(template) == {
        "prompt": [("3", "text")],
        "negative": [("6", "text")],
        "seed": [("8", "value")],
        "steps": [("9", "steps")],
        "cfg": [("9", "cfg")],
        "width": [("7", "width")],
        "height": [("7", "height")],
        "batch_size": [("7", "batch_size")],
    }
    assert any("chosen by its title" in note for note in template.inference_notes)
    assert required_models(template) == {
        "checkpoints": ["sd_xl_base_1.0.safetensors"],
        "loras": ["pixel-art-xl.safetensors"],
    }


def test_two_samplers_with_different_prompts_and_no_titles_are_ambiguous() -> None:
    with pytest.raises(WorkflowError) as caught:
        load_workflow(str(DATA / "ambiguous_two_samplers.json"))
    message = str(caught.value)
    assert "cannot tell which node holds the prompt" in message
    assert "node 6 (CLIPTextEncode" in message and "node 16 (CLIPTextEncode" in message
    assert "KSampler 3's positive" in message and "KSampler 13's positive" in message
    assert "'Positive prompt'" in message and ".meta.json" in message


def test_titles_resolve_the_two_sampler_ambiguity(tmp_path: Path) -> None:
    graph = json.loads((DATA / "ambiguous_two_samplers.json").read_text())
    graph["16"]["_meta"]["title"] = "Positive prompt"
    (tmp_path / "two.json").write_text(json.dumps(graph))
    template = load_workflow(str(tmp_path / "two.json"))
    assert _pairs(template)["prompt"] == [("16", "text")]
    assert _pairs(template)["seed"] == [("3", "seed"), ("13", "seed")]


def test_sampler_custom_advanced_is_followed_through_noise_guider_and_sigmas() -> None:
    template = load_workflow(str(DATA / "flux_custom_advanced.json"))
    assert _pairs(template) == {
        "prompt": [("6", "text")],
        "seed": [("25", "noise_seed")],
        "steps": [("17", "steps")],
        "denoise": [("17", "denoise")],
        "width": [("27", "width")],
        "height": [("27", "height")],
        "batch_size": [("27", "batch_size")],
    }
    assert required_models(template) == {
        "vae": ["ae.safetensors"],
        "text_encoders": ["t5xxl_fp16.safetensors", "clip_l.safetensors"],
        "diffusion_models": ["flux1-dev.safetensors"],
    }
    with pytest.raises(WorkflowError, match="no input for cfg"):
        render(template, GenerationParams(prompt="x", cfg=3.0))


def test_chained_samplers_share_the_seed_and_leave_disagreeing_values_unbound() -> None:
    template = load_workflow(str(DATA / "hires_fix.json"))
    pairs = _pairs(template)
    assert pairs["seed"] == [("3", "seed"), ("13", "seed")]
    assert pairs["cfg"] == [("3", "cfg"), ("13", "cfg")]
    assert pairs["width"] == [("5", "width")]
    assert "steps" not in pairs and "denoise" not in pairs
    with pytest.raises(WorkflowError) as caught:
        render(template, GenerationParams(prompt="x", steps=30))
    assert "different values" in str(caught.value) and "steps=12" in str(caught.value)


def test_controlnet_conditioning_is_followed_and_two_images_stay_unbound() -> None:
    template = load_workflow(str(DATA / "controlnet_two_images.json"))
    pairs = _pairs(template)
    assert pairs["prompt"] == [("6", "text")] and pairs["negative"] == [("7", "text")]
    assert "input_image" not in pairs and "width" not in pairs
    assert "node 22" in template.unbound["input_image"] and "node 24" in template.unbound["input_image"]
    with pytest.raises(WorkflowError, match="several images are loaded"):
        render(template, GenerationParams(prompt="x"), uploaded_image="a.png")
    assert required_models(template)["controlnet"] == ["control_v11p_sd15_openpose.pth"]


def test_a_text_input_fed_by_a_primitive_binds_the_primitive(tmp_path: Path) -> None:
    graph = json.loads((DATA / "default_api_export.json").read_text())
    graph["6"]["inputs"]["text"] = ["30", 0]
    graph["30"] = {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a fox"}, "_meta": {"title": "Text"}}
    (tmp_path / "prim.json").write_text(json.dumps(graph))
    assert _pairs(load_workflow(str(tmp_path / "prim.json")))["prompt"] == [("30", "value")]


def test_a_negative_derived_from_the_positive_is_not_bound(tmp_path: Path) -> None:
    graph = json.loads((DATA / "default_api_export.json").read_text())
    graph["3"]["inputs"]["negative"] = ["31", 0]
    graph["31"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}}
    del graph["7"]
    (tmp_path / "zero.json").write_text(json.dumps(graph))
    template = load_workflow(str(tmp_path / "zero.json"))
    assert "negative" not in template.bindings and "derived from the prompt" in template.unbound["negative"]


def test_a_graph_with_nothing_to_set_is_refused(tmp_path: Path) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    (tmp_path / "blank.json").write_text(json.dumps(graph))
    with pytest.raises(WorkflowError, match="found nothing Atelier could set"):
        load_workflow(str(tmp_path / "blank.json"))


# ----------------------------------------------------------------------------- file formats and errors


def test_a_ui_format_file_is_refused_with_how_to_export_the_api_format() -> None:
    with pytest.raises(WorkflowError) as caught:
        load_workflow(str(DATA / "ui_export.json"))
    message = str(caught.value)
    assert "ui_export.json" in message and "'nodes' and 'links'" in message
    assert "Export (API)" in message and "ui_export.ui.json" in message


def test_malformed_json_names_the_file_line_and_column() -> None:
    with pytest.raises(WorkflowError) as caught:
        load_workflow(str(DATA / "malformed.json"))
    assert "malformed.json is not valid JSON" in str(caught.value) and "line 6, column 7" in str(caught.value)


def test_a_link_to_a_missing_node_names_both_nodes() -> None:
    with pytest.raises(WorkflowError) as caught:
        load_workflow(str(DATA / "dangling_link.json"))
    assert "node 3 (KSampler) input 'model' links to node 4, which is not in the workflow" in str(caught.value)


def test_a_prompt_body_carries_the_ui_workflow() -> None:
    template = load_workflow(str(DATA / "prompt_body.json"))
    assert set(template.graph) == {"1", "2"} and _pairs(template) == {"input_image": [("1", "image")]}
    assert template.ui_workflow is not None and template.ui_workflow["nodes"][0]["type"] == "LoadImage"


def test_a_png_saved_by_comfyui_loads_its_workflow(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", (DATA / "default_api_export.json").read_text())
    info.add_text("workflow", (DATA / "ui_export.json").read_text())
    Image.new("RGB", (8, 8)).save(tmp_path / "ComfyUI_00001_.png", pnginfo=info)
    template = load_workflow(str(tmp_path / "ComfyUI_00001_.png"))
    assert template.bindings == load_workflow("txt2img").bindings
    assert template.ui_workflow is not None and "links" in template.ui_workflow


def test_a_png_without_a_workflow_is_explained(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(WorkflowError, match="carries no ComfyUI workflow"):
        load_workflow(str(tmp_path / "plain.png"))


def test_a_ui_json_beside_the_workflow_becomes_its_ui_workflow(tmp_path: Path) -> None:
    shutil.copy(DATA / "default_api_export.json", tmp_path / "mine.json")
    shutil.copy(DATA / "ui_export.json", tmp_path / "mine.ui.json")
    assert load_workflow(str(tmp_path / "mine.json")).ui_workflow == json.loads((DATA / "ui_export.json").read_text())


def test_names_resolve_in_user_folders_which_override_shipped_ones(tmp_path: Path) -> None:
    shutil.copy(DATA / "default_api_export.json", tmp_path / "portrait.json")
    shutil.copy(DATA / "default_api_export.json", tmp_path / "txt2img.json")
    assert load_workflow("portrait", [tmp_path]).source == tmp_path / "portrait.json"
    assert load_workflow("txt2img", [tmp_path]).source == tmp_path / "txt2img.json"
    assert load_workflow("txt2img").shipped


def test_unknown_names_and_missing_files_are_explained(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError) as caught:
        load_workflow("nope", [tmp_path])
    assert "unknown workflow 'nope'" in str(caught.value) and "txt2img-turbo" in str(caught.value)
    with pytest.raises(WorkflowError, match="does not exist"):
        load_workflow(str(tmp_path / "missing.json"))


# ----------------------------------------------------------------------------- user sidecars


def _with_sidecar(tmp_path: Path, data_file: str, sidecar: dict[str, Any]) -> Path:
    target = tmp_path / "mine.json"
    shutil.copy(DATA / data_file, target)
    (tmp_path / "mine.meta.json").write_text(json.dumps(sidecar))
    return target


def test_sidecar_targets_by_id_title_and_several_at_once(tmp_path: Path) -> None:
    path = _with_sidecar(
        tmp_path,
        "hires_fix.json",
        {
            "bindings": {
                "prompt": {"node": 6, "input": "text"},
                "seed": [["3", "seed"], ["13", "seed"]],
                "steps": ["3", "steps"],
                "width": {"title": "Upscale Latent", "input": "width"},
            }
        },
    )
    template = load_workflow(str(path))
    assert not template.inferred and template.inference_notes == []
    assert _pairs(template) == {
        "prompt": [("6", "text")],
        "seed": [("3", "seed"), ("13", "seed")],
        "steps": [("3", "steps")],
        "width": [("10", "width")],
    }
    graph = render(template, GenerationParams(prompt="x", seed=7, width=640))
    assert graph["3"]["inputs"]["seed"] == graph["13"]["inputs"]["seed"] == 7 and graph["10"]["inputs"]["width"] == 640


def test_a_sidecar_with_only_a_catalog_keeps_inference(tmp_path: Path) -> None:
    catalog = json.loads((SHIPPED_DIR / "txt2img.meta.json").read_text())["catalog"]
    template = load_workflow(str(_with_sidecar(tmp_path, "default_api_export.json", {"catalog": catalog})))
    assert template.inferred and template.catalog is not None and template.catalog.quality == "medium"


@pytest.mark.parametrize(
    ("bindings", "expected"),
    [
        ({"prompt": ["99", "text"]}, "points at node 99, which is not in the workflow"),
        ({"prompt": ["6", "txt"]}, "which has no such input; its inputs: text, clip"),
        ({"prompt": ["3", "model"]}, "which is linked to node 4 (CheckpointLoaderSimple"),
        ({"seed": ["3", "sampler_name"]}, "holds 'euler'; seed needs an input holding an integer"),
        ({"prompt": {"title": "CLIP Text Encode (Prompt)", "input": "text"}}, "which nodes 6, 7 share"),
        ({"prompt": {"title": "Nowhere", "input": "text"}}, "but no node has it"),
        ({"sampler": ["3", "sampler_name"]}, "unknown parameter 'sampler' in bindings"),
        ({"prompt": "6.text"}, "binding 'prompt' has the target '6.text'"),
    ],
)
def test_sidecar_mistakes_are_named(tmp_path: Path, bindings: dict[str, Any], expected: str) -> None:
    path = _with_sidecar(tmp_path, "default_api_export.json", {"bindings": bindings})
    with pytest.raises(WorkflowError) as caught:
        load_workflow(str(path))
    assert expected in str(caught.value) and "mine.json" in str(caught.value)


def test_sidecar_limits_must_name_parameters(tmp_path: Path) -> None:
    path = _with_sidecar(tmp_path, "default_api_export.json", {"limits": {"speed": {"max": 3}}})
    with pytest.raises(WorkflowError, match="unknown parameter 'speed' in limits"):
        load_workflow(str(path))


def test_sidecar_multiple_of_replaces_the_default_8(tmp_path: Path) -> None:
    path = _with_sidecar(tmp_path, "default_api_export.json", {"limits": {"width": {"multiple_of": 64}}})
    template = load_workflow(str(path))
    with pytest.raises(WorkflowError, match=r"not a multiple of 64, .*use 512 or 576"):
        render(template, GenerationParams(prompt="x", width=520))


def test_an_invalid_sidecar_is_refused_with_its_path(tmp_path: Path) -> None:
    path = _with_sidecar(tmp_path, "default_api_export.json", {"catalog": {"purpose": "x"}, "colour": "red"})
    with pytest.raises(WorkflowError) as caught:
        load_workflow(str(path))
    assert "mine.meta.json is not a valid workflow sidecar" in str(caught.value) and "colour" in str(caught.value)


# ----------------------------------------------------------------------------- object_info checks


def _broken(change: Any, workflow: str = "txt2img") -> dict[str, Any]:
    graph = copy.deepcopy(load_workflow(workflow).graph)
    change(graph)
    return graph


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda g: g["3"].update(class_type="KSamplerPlusPlus"), "unknown node class 'KSamplerPlusPlus'"),
        (lambda g: g["3"]["inputs"].pop("steps"), "missing its required input 'steps'"),
        (lambda g: g["3"]["inputs"].update(model=["4", 5]), "links to output 5 of node 4"),
        (lambda g: g["3"]["inputs"].update(model=["4", 1]), "expects MODEL but node 4 output 1 gives CLIP"),
        (lambda g: g["3"]["inputs"].update(model=["40", 0]), "links to node 40, which is not in the workflow"),
        (lambda g: g["3"]["inputs"].update(steps=0), "is 0, below the minimum 1"),
        (lambda g: g["3"]["inputs"].update(cfg=101), "is 101, above the maximum 100.0"),
        (lambda g: g["3"]["inputs"].update(steps="20"), "is '20', not a INT"),
        (lambda g: g["3"]["inputs"].update(sampler_name="eulerish"), "is 'eulerish', not one of its options"),
        (lambda g: g["3"]["inputs"].update(model="v1-5.safetensors"), "needs a link from a MODEL output"),
        (lambda g: g.pop("9"), "no output node"),
    ],
)
def test_check_against_object_info_names_each_problem(change: Any, expected: str, object_info: dict[str, Any]) -> None:
    problems = check_against_object_info(_broken(change), object_info)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda g: g["38"]["inputs"].update(type="qwen"), "input 'type' is 'qwen', not one of its options (stable"),
        (lambda g: g["37"]["inputs"].update(weight_dtype="fp16"), "input 'weight_dtype' is 'fp16', not one of its opt"),
        (lambda g: g["3"]["inputs"].update(scheduler="karas"), "input 'scheduler' is 'karas', not one of its options"),
        (lambda g: g["111"]["inputs"].pop("clip"), "node 111 (TextEncodeQwenImageEditPlus) is missing its required "
                                                   "input 'clip' (CLIP)"),
        (lambda g: g["111"]["inputs"].update(prompt=3), "input 'prompt' is 3, not a STRING"),
        (lambda g: g["75"]["inputs"].update(strength="1"), "input 'strength' is '1', not a FLOAT"),
        (lambda g: g["3"]["inputs"].update(steps=True), "input 'steps' is True, not a INT"),
        (lambda g: g["111"]["inputs"].update(image4=["117", 0]), "node 111 (TextEncodeQwenImageEditPlus) has an input "
                                                                 "'image4', which TextEncodeQwenImageEditPlus does not "
                                                                 "declare"),
        (lambda g: g["111"]["inputs"].update(image1=["38", 0]), "expects IMAGE but node 38 output 0 gives CLIP"),
        (lambda g: g["66"]["inputs"].update(shift=-1.0), "is -1.0, below the minimum 0.0"),
    ],
)
def test_a_broken_qwen_graph_is_refused_with_what_is_wrong(
    change: Any, expected: str, object_info: dict[str, Any]
) -> None:
    problems = check_against_object_info(_broken(change, "qwen-image-edit"), object_info)
    assert len(problems) == 1 and expected in problems[0], problems


def test_only_a_file_name_may_be_missing_from_a_combo(object_info: dict[str, Any]) -> None:
    kling = {"prompt": "a fox", "negative_prompt": "", "image_type": "subject", "image_fidelity": 0.5,
             "human_fidelity": 0.45, "model_name": "kling-v9", "aspect_ratio": "1:1", "n": 1}
    graph = {"1": {"class_type": "KlingImageGenerationNode", "inputs": kling},
             "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    problems = check_against_object_info(graph, object_info)
    assert problems == ["node 1 (KlingImageGenerationNode) input 'model_name' is 'kling-v9', not one of its options "
                        "(kling-v1, kling-v1-5, kling-v2)"]
    edit = copy.deepcopy(load_workflow("qwen-image-edit").graph)
    edit["37"]["inputs"]["unet_name"] = "my_finetune.gguf"
    edit["78"]["inputs"]["image"] = "not_uploaded_yet.png"
    assert check_against_object_info(edit, object_info) == []
    missing = check_against_object_info(edit, object_info, check_models=True)
    assert len(missing) == 4
    assert any("'my_finetune.gguf', not one of its options (none installed)" in p for p in missing)
    assert any("'not_uploaded_yet.png', not one of its options (example.png)" in p for p in missing)


def test_check_bindings_against_object_info_spots_undeclared_and_mistyped_inputs(object_info: dict[str, Any]) -> None:
    template = load_workflow("txt2img").model_copy(
        update={
            "bindings": {
                "seed": [Binding(node_id="3", input="sampler_name")],
                "prompt": [Binding(node_id="6", input="txt")],
            }
        }
    )
    problems = check_bindings_against_object_info(template, object_info)
    assert any("'seed'" in p and "COMBO" in p for p in problems)
    assert any("'txt', which CLIPTextEncode does not declare" in p for p in problems)


def test_required_models_reads_any_graph() -> None:
    graph = json.loads((DATA / "titled_combine.json").read_text())
    assert required_models(graph)["loras"] == ["pixel-art-xl.safetensors"]
