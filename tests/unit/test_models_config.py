"""The user's models_config.json: §12's example read verbatim, every model mapped to a workflow whose catalog takes
the file's figures, and bad files refused with the key path and the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from atelier.tools.catalog import list_templates
from atelier.tools.models_config import (
    ModelsConfigError,
    load_models_config,
    map_models,
    parse_models_config,
    strip_json_comments,
    vram_tier,
)
from atelier.tools.settings import load_settings
from atelier.tools.workflow_library import build_library, load_library, resolve_effective
from tests.user_workflows import S12_CONFIG, make_user_workflows


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The user's workflows: Qwen-Image-like tiers and two without a catalog entry."""
    return make_user_workflows(tmp_path / "workflows")


def _s12() -> dict[str, Any]:
    """The §12 example as a dict (for variations)."""
    data: dict[str, Any] = json.loads(strip_json_comments(S12_CONFIG.read_text()))
    return data


def _refusal(data: dict[str, Any] | str) -> str:
    """The message a bad file gets."""
    text = data if isinstance(data, str) else json.dumps(data)
    with pytest.raises(ModelsConfigError) as caught:
        parse_models_config(text, "models_config.json")
    return str(caught.value)


def test_the_s12_example_is_read_verbatim_with_its_comments() -> None:
    text = S12_CONFIG.read_text()
    assert text.startswith("// models_config.json") and '"low": "qwen-image-fast",      // < 8GB' in text
    config = load_models_config(S12_CONFIG)
    assert list(config.models) == ["qwen-image-ultra", "qwen-image-standard", "qwen-image-fast", "sdxl-turbo"]
    fast = config.models["qwen-image-fast"]
    assert (fast.quality, fast.vram_required_gb, fast.avg_time_seconds, fast.recommended_steps) == ("medium", 6, 30, 15)
    assert (fast.max_resolution, fast.use_cases, fast.cost_per_image) == (
        "512x512", ["thumbnails", "previews", "batch_processing"], 0.01)
    rules = config.routing_rules
    assert dict(rules.by_urgency) == {"immediate": "sdxl-turbo", "standard": "qwen-image-standard",
                                      "flexible": "qwen-image-ultra"}
    assert rules.by_purpose["thumbnail"] == "qwen-image-fast"
    assert dict(rules.by_available_vram) == {"low": "qwen-image-fast", "medium": "qwen-image-standard",
                                             "high": "qwen-image-ultra"}
    assert rules.for_purpose("hero", "hero_images") == ("routing_rules.by_purpose.hero_image", "qwen-image-ultra")
    assert [vram_tier(gb) for gb in (6, 7.9, 8, 12, 12.5, 16)] == ["low", "low", "medium", "medium", "high", "high"]


def test_comments_are_dropped_outside_strings_only() -> None:
    text = '{"a": "http://x//y", /* block\nover lines */ "b": "/* kept */" // tail\n}'
    stripped = strip_json_comments(text)
    assert json.loads(stripped) == {"a": "http://x//y", "b": "/* kept */"}
    assert stripped.count("\n") == text.count("\n"), "line numbers of later errors stay right"
    assert json.loads(strip_json_comments('{"q": "say \\"//\\" here"}')) == {"q": 'say "//" here'}


def test_every_model_maps_to_a_workflow_and_the_files_figures_win(folder: Path) -> None:
    listing = list_templates([folder])
    library = build_library(listing, load_models_config(S12_CONFIG), S12_CONFIG)
    found = {m.model: (m.workflow, m.matched_by) for m in library.mappings.values()}
    assert found == {
        "qwen-image-ultra": ("qwen-image-ultra", "its name"),
        "qwen-image-standard": ("qwen-image", 'its name without "-standard"'),
        "qwen-image-fast": ("qwen-image-fast", "its name"),
        "sdxl-turbo": ("txt2img-turbo", "its file sd_xl_turbo_1.0_fp16.safetensors"),
    }
    fast = library.get("qwen-image-fast")
    assert fast is not None and fast.catalog is not None
    entry = fast.catalog
    assert (entry.quality, entry.vram_gb, entry.typical_seconds, entry.recommended_steps) == ("medium", 6, 30, 15)
    assert (entry.max_resolution, entry.cost_per_image) == ("512x512", 0.01)
    assert entry.use_cases == ["thumbnails", "previews", "batch_processing"]
    assert entry.purpose.startswith("test copy of txt2img") and entry.max_steps == 60, "the rest stays the sidecar's"
    turbo = library.get("txt2img-turbo")
    assert turbo is not None and turbo.catalog is not None and turbo.catalog.vram_gb == 4
    untouched = library.get("txt2img-hq")
    shipped = {t.name: t for t in listing.templates}["txt2img-hq"]
    assert untouched is not None and untouched.catalog == shipped.catalog
    assert library.model_of("qwen-image") == "qwen-image-standard" and library.model_of("txt2img") is None


def test_the_ledger_and_workers_see_the_same_figures(folder: Path, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "d", workflows_dir=folder, models_config=S12_CONFIG)
    template = resolve_effective("qwen-image-fast", settings)
    assert template.catalog is not None and template.catalog.max_resolution == "512x512"
    plain = resolve_effective("qwen-image-fast", load_settings(data_dir=tmp_path / "d", workflows_dir=folder))
    assert plain.catalog is not None and plain.catalog.max_resolution == "1328x1328"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(rules=d.pop("routing_rules")),
         "rules is not a key models_config.json knows (did you mean 'routing_rules'? known here: models, "
         "routing_rules)"),
        (lambda d: d["models"]["sdxl-turbo"].update(vram_gb=4),
         "models.sdxl-turbo.vram_gb is not a key models_config.json knows (did you mean 'vram_required_gb'?"),
        (lambda d: d["models"]["sdxl-turbo"].update(quality="superb"),
         "models.sdxl-turbo.quality: Input should be 'fast', 'medium', 'high' or 'ultra' (got 'superb')"),
        (lambda d: d["models"]["qwen-image-fast"].update(max_resolution="big"),
         "models.qwen-image-fast.max_resolution:"),
        (lambda d: d["models"]["qwen-image-ultra"].update(vram_required_gb=-1),
         "models.qwen-image-ultra.vram_required_gb: Input should be greater than or equal to 0"),
        (lambda d: d["routing_rules"]["by_urgency"].update(asap="sdxl-turbo"),
         "routing_rules.by_urgency.asap: Input should be 'immediate', 'standard' or 'flexible'"),
        (lambda d: d["routing_rules"].update(by_time={}),
         "routing_rules.by_time is not a key models_config.json knows (known here: by_urgency, by_purpose, "
         "by_available_vram)"),
        (lambda d: d.update(models={}), "models: Dictionary should have at least 1 item"),
    ],
)
def test_bad_keys_and_values_name_the_key_path_and_the_fix(change: Any, expected: str) -> None:
    data = _s12()
    change(data)
    message = _refusal(data)
    assert message.startswith("models_config.json: ") and expected in message, message
    assert "fix the file" in message


def test_a_rule_naming_an_unknown_model_says_which_and_suggests_one() -> None:
    data = _s12()
    data["routing_rules"]["by_purpose"]["thumbnail"] = "qwen-image-fastt"
    message = _refusal(data)
    assert ('routing_rules.by_purpose.thumbnail names "qwen-image-fastt", which is not in models: qwen-image-ultra, '
            'qwen-image-standard, qwen-image-fast, sdxl-turbo; did you mean "qwen-image-fast"?') in message


def test_not_json_says_where() -> None:
    message = _refusal(S12_CONFIG.read_text().replace('"cost_per_image": 0.005', '"cost_per_image": 0.005,,'))
    assert re.search(r"models_config\.json is not JSON: .* at line \d+, column \d+", message), message


def test_a_model_that_maps_to_no_workflow_is_named_with_the_fix(folder: Path) -> None:
    shipped_only = [t for t in list_templates().templates if not t.name.startswith("qwen-image")]  # theirs missing
    with pytest.raises(ModelsConfigError) as caught:
        map_models(load_models_config(S12_CONFIG), shipped_only, "models_config.json")
    message = str(caught.value)
    assert ('models.qwen-image-ultra maps to no workflow: none is named "qwen-image-ultra" and none loads '
            "qwen_image_edit_2509_fp8_e4m3fn.safetensors; add \"workflow\": \"<name>\" to it") in message
    assert 'none is named "qwen-image-standard" or "qwen-image"' in message
    assert "sdxl-turbo" not in message, "sdxl-turbo maps to txt2img-turbo by its file"
    data = _s12()
    data["models"]["sdxl-turbo"]["workflow"] = "turbo-xl"
    with pytest.raises(ModelsConfigError, match=r'models\.sdxl-turbo\.workflow names "turbo-xl", which is not a '
                                                r"workflow \(known: img2img, my-restyle"):
        map_models(parse_models_config(json.dumps(data)), list_templates([folder]).templates)


def test_a_models_path_finds_its_workflow_and_two_models_may_not_share_one(folder: Path) -> None:
    data = {"models": {"edit-2509": {"path": "qwen_image_edit_2509_fp8_e4m3fn.safetensors", "quality": "ultra"}}}
    [mapping] = map_models(parse_models_config(json.dumps(data)), list_templates([folder]).templates).values()
    assert (mapping.workflow, mapping.entry.task, mapping.entry.quality) == ("qwen-image-edit", "edit", "ultra")
    data["models"]["also-edit"] = {"workflow": "qwen-image-edit"}
    with pytest.raises(ModelsConfigError, match=r"models also-edit and edit-2509 all map to workflow "
                                                r"'qwen-image-edit'.*give each a \"workflow\" key"):
        map_models(parse_models_config(json.dumps(data)), list_templates([folder]).templates)


def test_a_workflow_without_a_catalog_takes_the_whole_entry_from_the_file(folder: Path) -> None:
    whole = {"workflow": "my-sketch", "quality": "high", "vram_required_gb": 10, "avg_time_seconds": 20,
             "max_resolution": "1024x1024", "cost_per_image": 0.02, "use_cases": ["posters"]}
    config = parse_models_config(json.dumps({"models": {"sketchy": whole}}))
    [mapping] = map_models(config, list_templates([folder]).templates).values()
    assert (mapping.entry.task, mapping.entry.quality, mapping.entry.purpose) == ("txt2img", "high",
                                                                                   "sketchy (models_config.json)")
    partial = parse_models_config(json.dumps({"models": {"sketchy": {"workflow": "my-sketch", "quality": "high"}}}))
    with pytest.raises(ModelsConfigError, match=r"maps to workflow 'my-sketch', which has no catalog entry, so the "
                                                r"model must give vram_required_gb, avg_time_seconds, "
                                                r"cost_per_image, max_resolution"):
        map_models(partial, list_templates([folder]).templates)
    too_many = parse_models_config(json.dumps({"models": {"qwen-image": {"recommended_steps": 80}}}))
    with pytest.raises(ModelsConfigError, match=r"models\.qwen-image does not fit workflow 'qwen-image': "
                                                r"recommended_steps 80 is more than max_steps 60"):
        map_models(too_many, list_templates([folder]).templates)


def test_settings_find_the_file_from_the_variable_or_the_imported_copy(tmp_path: Path, folder: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_MODELS_CONFIG", str(S12_CONFIG))
    assert load_settings(data_dir=tmp_path / "d").models_config_file == S12_CONFIG
    monkeypatch.delenv("ATELIER_MODELS_CONFIG")
    settings = load_settings(data_dir=tmp_path / "d", workflows_dir=folder)
    assert settings.models_config_file is None and load_library(settings).config is None
    settings.imported_models_config.parent.mkdir(parents=True)
    settings.imported_models_config.write_text(S12_CONFIG.read_text())
    assert settings.models_config_file == tmp_path / "d" / "models_config.json"
    assert load_library(settings).mappings["qwen-image-fast"].workflow == "qwen-image-fast"
    missing = load_settings(data_dir=tmp_path / "d", models_config=tmp_path / "nope.json")
    with pytest.raises(ModelsConfigError, match=r"nope\.json does not exist; fix ATELIER_MODELS_CONFIG"):
        load_library(missing)


def test_a_config_broken_after_planning_leaves_jobs_their_sidecars_entry(folder: Path, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "models_config.json"
    broken.write_text('{"models": {"x": {"quality": "superb"}}}')
    settings = load_settings(data_dir=tmp_path / "d", workflows_dir=folder, models_config=broken)
    template = resolve_effective("qwen-image-fast", settings)
    assert template.catalog is not None and template.catalog.max_resolution == "1328x1328"
    assert "models.x.quality" in caplog.text, "the problem is logged"
    with pytest.raises(ModelsConfigError, match=r"models\.x\.quality"):
        load_library(settings)


def test_jobs_are_planned_with_the_files_figures(folder: Path, tmp_path: Path) -> None:
    from atelier.tools.errors import WorkflowError
    from atelier.tools.ledger.models import JobRequest
    from atelier.tools.ledger.planning import plan_job
    from atelier.tools.schemas import GenerationParams

    settings = load_settings(data_dir=tmp_path / "d", workflows_dir=folder, models_config=S12_CONFIG)
    small = plan_job(JobRequest(params=GenerationParams(prompt="a kettle", width=512, height=512),
                                workflow="qwen-image-fast", owner="ana"), settings)
    assert (small.vram_gb, small.estimated_seconds, small.estimated_cost) == (6, 30, 0.01)
    with pytest.raises(WorkflowError, match=r"1024x1024 is 1,048,576 pixels, more than workflow 'qwen-image-fast' "
                                            r"makes well \(512x512"):
        plan_job(JobRequest(params=GenerationParams(prompt="a kettle", width=1024, height=1024),
                            workflow="qwen-image-fast", owner="ana"), settings)
