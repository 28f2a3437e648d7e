"""The chat page's pure helpers (atelier/chat/render.py): progress bar, status lines per event, the service banner,
the approval text."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import atelier.chat.render as render
from atelier.studio import Approval, ChatOptions
from atelier.tools.doctor import ServiceCheck
from atelier.tools.ledger.events import JobEvent
from atelier.tools.ledger.models import Job
from atelier.tools.settings import load_settings


def _job(**changes: Any) -> Job:
    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "id": uuid.UUID("3f2a9c1e-7b4d-4e8f-9a6b-2c1d0e9f8a7b"), "status": "queued", "workflow": "txt2img",
        "params": {"prompt": "a lighthouse at dusk, oil painting, warm light on the rocks", "seed": 7},
        "priority": 0, "owner": "local", "idempotency_key": None, "cache_key": "k", "use_cache": True,
        "vram_gb": 4, "estimated_seconds": 8, "estimated_cost": 0.01, "actual_cost": None, "gpu_seconds": None,
        "attempts": 1, "failures": 0, "max_attempts": 5, "worker": None, "lease_expires_at": None, "server": None,
        "cancel_requested": False, "not_before": now, "outputs": [], "error": None, "error_kind": None,
        "cached_from": None, "batch": None, "batch_row": None, "created_at": now, "claimed_at": None,
        "submitted_at": None, "started_at": None, "finished_at": None, "updated_at": now,
    }
    row.update(changes)
    return Job.model_validate(row)


def test_progress_bar_fills_in_proportion() -> None:
    assert render.progress_bar(0, 20, width=10) == "▱" * 10 + " step 0/20"
    assert render.progress_bar(6, 20, width=10) == "▰" * 3 + "▱" * 7 + " step 6/20"
    assert render.progress_bar(20, 20, width=10) == "▰" * 10 + " step 20/20"


def test_status_lines_follow_the_job() -> None:
    job = _job()
    label = "“a lighthouse at dusk, oil painting, warm light…” (txt2img · job 3f2a9c1e)"
    assert render.status_line(job) == f"Queued: {label}, waiting for a worker"
    event = JobEvent(job_id=str(job.id), kind="progress", data={"step": 3, "max": 12, "node": "3"})
    rendering = render.status_line(job, event)
    assert rendering.startswith(f"Rendering {label} ▰") and "step 3/12" in rendering
    retry = JobEvent(job_id=str(job.id), kind="retrying", data={"error": "ComfyUI is unreachable", "in_seconds": 2.0})
    assert "ComfyUI is unreachable; next try in 2.0 s" in render.status_line(job, retry)
    done = _job(status="succeeded", gpu_seconds=4.25)
    final = JobEvent(job_id=str(job.id), kind="done", job=done)
    assert render.status_line(job, final).startswith(f"Done: {label} · seed 7 · 4.2 s")
    failed = _job(status="failed", error="node 3: out of memory")
    assert render.status_line(failed) == f"Failed: {label}: node 3: out of memory"


def test_the_banner_names_each_down_service_and_how_to_start_it() -> None:
    settings = load_settings(chat_model="qwen3")
    checks = [ServiceCheck("ComfyUI", "http://gpu:8188", False, True, hint="unreachable"),
              ServiceCheck("Ollama", "http://llm:11434", False, False),
              ServiceCheck("Qdrant", "local", True, False)]
    banner = render.service_banner(checks, settings, ["Image memory unavailable"])
    assert "**ComfyUI is not reachable** at `http://gpu:8188`" in banner and "COMFYUI_URLS" in banner
    assert "`ollama pull qwen3`" in banner and "Qdrant" not in banner
    assert banner.endswith("**Warning:** Image memory unavailable")
    assert render.service_banner(checks[2:], settings) == ""


def test_the_approval_text_lists_estimate_and_images() -> None:
    text = render.approval_text(Approval("Generate these images?", {"images": 2, "seconds": 40, "cost": 0.0312},
                                      [{"purpose": "hero", "workflow": "txt2img-hq", "prompt": "a cup"},
                                       {"purpose": "thumbnail", "workflow": "txt2img", "prompt": "a cup, small",
                                        "fitted": ["size 1024×768 → 888×664 (txt2img takes at most 768x768 pixels)",
                                                   "no negative prompt: txt2img has no input for it"]}]))
    assert text.splitlines() == ["**Generate these images?** 2 image(s), ~40 s of GPU, cost 0.0312",
                                 "- hero: txt2img-hq — a cup",
                                 "- thumbnail: txt2img — a cup, small (fitted: size 1024×768 → 888×664 (txt2img takes "
                                 "at most 768x768 pixels); no negative prompt: txt2img has no input for it)"]


def test_chat_options_map_to_the_graph() -> None:
    assert [ChatOptions(illustrate=i).mode() for i in ("auto", "always", "never")] == ["auto", "image", "text"]
    config = ChatOptions(workflow="txt2img-hq", quality=None).configurable("t9")
    assert config == {"configurable": {"thread_id": "t9", "workflow": "txt2img-hq", "quality": None,
                                       "target_seconds": None}}
