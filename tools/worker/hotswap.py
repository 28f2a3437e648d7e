"""The worker's hot-swap step: make room on the GPU just before a job's prompt goes to ComfyUI."""

from __future__ import annotations

import logging

from atelier.tools.comfyui.client import ComfyClient
from atelier.tools.comfyui.templates import WorkflowTemplate, required_models
from atelier.tools.errors import ComfyHTTPError, ComfyUnreachableError
from atelier.tools.gpu.holdings import model_keys
from atelier.tools.gpu.room import GpuRoom
from atelier.tools.ledger.events import EventPublisher
from atelier.tools.ledger.models import Job
from atelier.tools.worker.metrics import WorkerMetrics

__all__ = ["job_models", "make_room_for"]

log = logging.getLogger(__name__)


def job_models(job: Job, template: WorkflowTemplate) -> frozenset[str]:
    """The model files a job loads: recorded at submit, or read from its workflow (jobs from before that column)."""
    return frozenset(job.models) or frozenset(model_keys(required_models(template)))


async def make_room_for(gpu: GpuRoom, job: Job, server: str, comfy: ComfyClient, models: frozenset[str],
                        publisher: EventPublisher, metrics: WorkerMetrics) -> None:
    """Hot-swap for one job; publish a `vram` event when it unloaded something or the job is still short.

    Never raises: a ComfyUI that cannot be asked fails the job's submission right after, with its own error.
    """
    try:
        record = await gpu.make_room(comfy.rest, server, job.vram_gb, models)
    except (ComfyUnreachableError, ComfyHTTPError) as exc:
        log.warning("job %s: hot-swap skipped: %s", job.id, exc)
        return
    except Exception:
        log.exception("job %s: hot-swap failed; submitting anyway", job.id)
        return
    if record is None or not (record.acted or record.short):
        return
    for unload in record.unloads:
        metrics.hotswap_unloads.labels(unload.target).inc()
    log.info("job %s on %s: VRAM %.1f → %.1f GB free for %.1f GB (%s): %s", job.id, server, record.free_before_gb,
             record.free_after_gb, record.need_gb, ", ".join(f"{u.target}:{u.name}" for u in record.unloads) or
             "nothing unloaded", record.note)
    await publisher.emit("vram", record.as_event())
