"""The workflow catalog: entries read from sidecars, listings that survive broken files, and routing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from atelier.tools.catalog import CatalogEntry, choose_workflow, list_templates, normalize_purpose
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.errors import WorkflowError
from atelier.workflows import SHIPPED_DIR

DATA = Path(__file__).parent / "data"
SHIPPED = ["img2img", "qwen-image", "qwen-image-edit", "qwen-image-fast", "qwen-image-ultra", "txt2img", "txt2img-hq",
           "txt2img-turbo", "upscale"]


def _entry(**changes: Any) -> CatalogEntry:
    fields: dict[str, Any] = {
        "purpose": "test",
        "quality": "medium",
        "vram_gb": 4,
        "typical_seconds": 10,
        "cost_per_image": 0.01,
        "recommended_steps": 20,
        "max_resolution": "1024x768",
        "use_cases": ["general"],
    }
    return CatalogEntry(**(fields | changes))


def _template(name: str, **changes: Any) -> WorkflowTemplate:
    return WorkflowTemplate(name=name, graph={}, bindings={}, catalog=_entry(**changes))


# ----------------------------------------------------------------------------- entries and listings


def test_catalog_entry_parses_max_resolution() -> None:
    entry = _entry(max_resolution="1024x768")
    assert entry.resolution == (1024, 768) and (entry.max_width, entry.max_height) == (1024, 768)
    assert entry.max_pixels == 1024 * 768 and entry.max_resolution == "1024x768"


@pytest.mark.parametrize(
    "changes",
    [{"max_resolution": "huge"}, {"quality": "superb"}, {"vram_gb": -1}, {"typical_seconds": 0}, {"colour": "red"},
     {"max_steps": 0}, {"max_steps": 10}, {"max_batch_size": 0}],  # recommended_steps 20 over max_steps 10
)
def test_catalog_entry_rejects_bad_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _entry(**changes)


def test_list_templates_loads_every_shipped_workflow_with_its_catalog() -> None:
    listing = list_templates()
    assert listing.errors == []
    assert listing.names() == SHIPPED
    for template in listing.templates:
        sidecar = json.loads((SHIPPED_DIR / f"{template.name}.meta.json").read_text())
        assert template.catalog == CatalogEntry(**sidecar["catalog"])


def test_a_broken_user_file_is_reported_not_fatal(tmp_path: Path) -> None:
    shutil.copy(DATA / "default_api_export.json", tmp_path / "portrait.json")
    shutil.copy(DATA / "malformed.json", tmp_path / "broken.json")
    shutil.copy(DATA / "ui_export.json", tmp_path / "from_ui.json")
    listing = list_templates([tmp_path, tmp_path / "missing"])
    assert listing.names() == [*SHIPPED, "portrait"]
    portrait = listing.templates[-1]
    assert portrait.catalog is None and portrait.inferred
    assert len(listing.errors) == 3
    assert any("broken.json" in e and "line 6, column 7" in e for e in listing.errors)
    assert any("from_ui.json" in e and "Export (API)" in e for e in listing.errors)
    assert any("missing does not exist" in e for e in listing.errors)


def test_a_user_workflow_replaces_the_shipped_one_of_the_same_name(tmp_path: Path) -> None:
    shutil.copy(DATA / "default_api_export.json", tmp_path / "txt2img.json")
    listing = list_templates([tmp_path])
    [txt2img] = [t for t in listing.templates if t.name == "txt2img"]
    assert txt2img.source == tmp_path / "txt2img.json" and txt2img.catalog is None


# ----------------------------------------------------------------------------- routing over the shipped catalog


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ({}, "txt2img-hq"),
        ({"urgency": "immediate"}, "txt2img-turbo"),
        ({"urgency": "standard"}, "txt2img-hq"),
        ({"urgency": "flexible"}, "qwen-image-ultra"),  # the best tier, whatever the time
        ({"urgency": "flexible", "vram_free_gb": 13}, "txt2img-hq"),  # ultra needs 14 GB; high ties go to speed
        ({"purpose": "hero_image", "urgency": "flexible"}, "qwen-image-ultra"),
        ({"purpose": "hero_image"}, "txt2img-hq"),
        ({"purpose": "Hero images"}, "txt2img-hq"),
        ({"purpose": "thumbnail"}, "txt2img"),
        ({"purpose": "thumbnail", "urgency": "immediate"}, "txt2img-turbo"),
        ({"purpose": "preview"}, "txt2img-turbo"),
        ({"purpose": "social-media", "vram_free_gb": 6}, "txt2img"),
        ({"vram_free_gb": 5}, "txt2img"),
        ({"vram_free_gb": 5, "urgency": "immediate"}, "txt2img"),
        ({"vram_free_gb": 6.5, "urgency": "immediate"}, "txt2img-turbo"),
        ({"task": "upscale"}, "upscale"),
        ({"task": "img2img", "purpose": "restyle"}, "qwen-image-edit"),  # high quality within two minutes
        ({"task": "img2img", "purpose": "restyle", "urgency": "immediate"}, "img2img"),
        ({"task": "img2img", "purpose": "restyle", "vram_free_gb": 8}, "img2img"),
        ({"task": "img2img", "purpose": "image_edit"}, "qwen-image-edit"),
        ({"purpose": "text in image"}, "qwen-image"),
        ({"purpose": "posters", "urgency": "flexible"}, "qwen-image-ultra"),
        ({"purpose": "general"}, "qwen-image"),  # high beats txt2img's medium within two minutes
        ({"purpose": "batch_processing"}, "qwen-image-fast"),
    ],
)
def test_choose_workflow_routes_the_shipped_catalog(request_: dict[str, Any], expected: str) -> None:
    assert choose_workflow(**request_).name == expected


def test_no_workflow_fits_in_too_little_vram() -> None:
    with pytest.raises(WorkflowError) as caught:
        choose_workflow(vram_free_gb=3)
    assert "3 GB" in str(caught.value) and "'txt2img', needs 4 GB" in str(caught.value)


def test_vram_is_a_hard_limit_even_for_a_purpose() -> None:
    with pytest.raises(WorkflowError) as caught:
        choose_workflow(purpose="hero_image", vram_free_gb=6)
    assert "purpose 'hero_image'" in str(caught.value) and "'txt2img-hq', needs 8 GB" in str(caught.value)


def test_an_unknown_purpose_lists_the_known_ones() -> None:
    with pytest.raises(WorkflowError) as caught:
        choose_workflow(purpose="tattoo design")
    assert "tattoo design" in str(caught.value) and "hero_images" in str(caught.value)


def test_unknown_urgency_and_task_are_explained() -> None:
    with pytest.raises(WorkflowError, match="use one of: immediate, standard, flexible"):
        choose_workflow(urgency="asap")
    with pytest.raises(WorkflowError, match="known tasks: img2img, txt2img, upscale"):
        choose_workflow(task="video")


# ----------------------------------------------------------------------------- routing rules on a synthetic catalog


def test_standard_prefers_the_best_tier_that_finishes_within_two_minutes() -> None:
    pool = [
        _template("ultra", quality="ultra", typical_seconds=200, vram_gb=14),
        _template("high", quality="high", typical_seconds=60, vram_gb=8),
        _template("fast", quality="fast", typical_seconds=5, vram_gb=4),
    ]
    assert choose_workflow(templates=pool).name == "high"
    assert choose_workflow(urgency="flexible", templates=pool).name == "ultra"
    assert choose_workflow(urgency="immediate", templates=pool).name == "fast"
    assert choose_workflow(urgency="flexible", vram_free_gb=10, templates=pool).name == "high"


def test_standard_falls_back_to_the_fastest_when_everything_is_slow() -> None:
    pool = [_template("slow", quality="ultra", typical_seconds=300), _template("slower", typical_seconds=400)]
    assert choose_workflow(templates=pool).name == "slow"


def test_ties_go_to_quality_when_urgent_and_to_speed_when_flexible() -> None:
    pool = [
        _template("a", quality="medium", typical_seconds=10),
        _template("b", quality="high", typical_seconds=10),
        _template("c", quality="high", typical_seconds=30),
    ]
    assert choose_workflow(urgency="immediate", templates=pool).name == "b"
    assert choose_workflow(urgency="flexible", templates=pool).name == "b"


def test_workflows_without_a_catalog_entry_are_never_routed_to() -> None:
    plain = WorkflowTemplate(name="plain", graph={}, bindings={})
    assert choose_workflow(templates=[plain, _template("listed")]).name == "listed"
    with pytest.raises(WorkflowError, match="no catalogued workflow does the task 'txt2img'"):
        choose_workflow(templates=[plain])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Hero images", "hero_image"), ("social-media", "social_media"), ("THUMBNAILS", "thumbnail"), ("web", "web")],
)
def test_normalize_purpose(text: str, expected: str) -> None:
    assert normalize_purpose(text) == expected
