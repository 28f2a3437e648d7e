"""The chat page's words, with no UI and no I/O: progress bars, a job's status line, chat messages with an image,
the approval question, the service table and the banner naming each service that is down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atelier.studio import Approval
from atelier.tools.doctor import ServiceCheck
from atelier.tools.ledger.events import JobEvent
from atelier.tools.ledger.models import Job
from atelier.tools.service_errors import start_hint
from atelier.tools.settings import Settings

__all__ = ["DOCTOR_COLUMNS", "approval_text", "doctor_rows", "image_message", "progress_bar",
           "service_banner", "status_line"]

DOCTOR_COLUMNS = ["service", "status", "url", "version", "details"]


def doctor_rows(checks: list[ServiceCheck]) -> list[list[str]]:
    """The doctor's findings as table rows (same columns as `atelier doctor`)."""
    return [
        [c.service, c.status, c.url, c.version, "; ".join(c.details) if c.ok else c.hint] for c in checks
    ]


def service_banner(checks: list[ServiceCheck], settings: Settings, extra: list[str] | None = None) -> str:
    """Markdown naming each service that is down and how to start it (empty when all is well)."""
    lines = []
    for check in checks:
        how = start_hint(check.service, model=settings.chat_model)
        if check.ok or how is None:
            continue
        lines.append(f"**{check.service} is not reachable** at `{check.url}`: {how}.")
    lines.extend(f"**Warning:** {problem}" for problem in extra or [])
    return "\n\n".join(lines)


def progress_bar(step: int, total: int, width: int = 20) -> str:
    """A text progress bar: `▰▰▰▱▱▱ step 3/6`."""
    filled = round(width * step / total) if total else 0
    return "▰" * filled + "▱" * (width - filled) + f" step {step}/{total}"


def _label(job: Job) -> str:
    """A job's short name in the chat: the start of its prompt, workflow and id."""
    prompt = str(job.params.get("prompt", ""))
    subject = prompt if len(prompt) <= 48 else prompt[:47].rsplit(" ", 1)[0] + "…"
    return f"“{subject}” ({job.workflow.rsplit('/', 1)[-1]} · job {str(job.id)[:8]})"


def status_line(job: Job, event: JobEvent | None = None) -> str:
    """What to say about a job now, from its latest event (or its row)."""
    if event is not None and not event.final:
        data = event.data
        if event.kind == "progress":
            return f"Rendering {_label(job)} {progress_bar(int(data['step']), int(data['max']))}"
        if event.kind == "started":
            return f"Rendering {_label(job)}: started on ComfyUI"
        if event.kind == "submitted":
            return f"Waiting in ComfyUI's queue: {_label(job)}"
        if event.kind == "retrying":
            return f"Retrying {_label(job)}: {data.get('error')}; next try in {data.get('in_seconds')} s"
    final = event.job if event is not None and event.job is not None else job
    if final.status == "succeeded":
        seconds = f" · {final.gpu_seconds:.1f} s" if final.gpu_seconds else ""
        cached = " · from an identical earlier image" if final.cached_from else ""
        return f"Done: {_label(final)} · seed {final.params.get('seed')}{seconds}{cached}. Rate it below (thumbs or ★)."
    if final.status == "failed":
        return f"Failed: {_label(final)}: {final.error}"
    if final.status == "cancelled":
        return f"Cancelled: {_label(final)}"
    return f"Queued: {_label(final)}, waiting for a worker"


def image_message(text: str, image: Path | None) -> dict[str, Any]:
    """An assistant message with a line of text and, when there is one, an image."""
    content: list[Any] = [text]
    if image is not None:
        content.append({"path": str(image)})
    return {"role": "assistant", "content": content}


def approval_text(approval: Approval) -> str:
    """The approval question in Markdown: estimate and each image."""
    estimate = approval.estimate
    lines = [f"**{approval.question}** {estimate.get('images', len(approval.images))} image(s), "
             f"~{float(estimate.get('seconds', 0)):g} s of GPU, cost {float(estimate.get('cost', 0)):.4f}"]
    lines += [f"- {i.get('purpose')}: {i.get('workflow')} — {i.get('prompt')}"
              + (f" (fitted: {'; '.join(str(n) for n in i['fitted'])})" if i.get("fitted") else "")
              for i in approval.images]
    return "\n".join(lines)
