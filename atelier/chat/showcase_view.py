"""What the Gallery tab shows of a showcase, as escaped HTML and files: its progress, its approval question, its
header (headline, brief, status, note), its images with captions and copy, and its page and zip to download.

Briefs, subjects, prompts, captions and copy come from people and models: every one of them is escaped here.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from atelier.chat.files import image_file
from atelier.chat.runtime import ChatRuntime
from atelier.graphs.showcase_run import ShowcaseApproval, ShowcaseProgressed
from atelier.tools.errors import AtelierError
from atelier.tools.showcase.models import Showcase
from atelier.tools.showcase.publish import gallery_file

__all__ = ["approval_html", "choice_label", "downloads", "header_html", "pictures", "progress_html"]

_STAGES = {"images": "Images", "captions": "Captions", "gallery": "Gallery", "done": "Done"}


def choice_label(showcase: Showcase) -> str:
    """The showcase in the list: when, status, images and the brief's start."""
    return f"{showcase.created_at:%Y-%m-%d %H:%M} · {showcase.summary()}"


def progress_html(event: ShowcaseProgressed) -> str:
    """One line of progress across the set, with a bar."""
    width = 20
    filled = round(width * event.done / event.total) if event.total else 0
    bar = "▰" * filled + "▱" * (width - filled)
    stage = _STAGES.get(event.stage, event.stage)
    return (f'<p class="showcase-progress"><strong>{escape(stage)}</strong> {bar} {event.done}/{event.total} · '
            f"{escape(event.message)}</p>")


def approval_html(approval: ShowcaseApproval) -> str:
    """The approval question: the estimate and every planned image."""
    estimate = approval.estimate
    rows = "".join(f"<li><strong>{escape(str(image.get('purpose', '')))}</strong> on "
                   f"{escape(str(image.get('workflow', '')))}: {escape(str(image.get('prompt', '')))}</li>"
                   for image in approval.images)
    return (f"<p><strong>{escape(approval.question)}</strong> {int(estimate.get('images', len(approval.images)))} "
            f"image(s), ~{float(estimate.get('seconds', 0)):g} s of GPU, cost {float(estimate.get('cost', 0)):.4f}."
            f"</p><ul>{rows}</ul>")


def header_html(showcase: Showcase) -> str:
    """The selected showcase's header: headline, brief, how far it is, and its note."""
    made = sum(1 for item in showcase.items if item.made)
    progress = str((showcase.progress or {}).get("message") or "")
    state = f"{showcase.status}: {made} of {len(showcase.items)} image(s) made"
    if not showcase.finished and progress:
        state += f" · {progress}"
    note = f'<p class="showcase-note">{escape(showcase.note)}</p>' if showcase.note else ""
    photo = f"<p>Made from the product photo {escape(showcase.photo)}.</p>" if showcase.photo else ""
    return (f'<div class="showcase-header"><h3>{escape(showcase.headline or "Product showcase")}</h3>'
            f"<p><em>{escape(showcase.brief)}</em></p><p>{escape(state)}</p>{photo}{note}</div>")


async def pictures(runtime: ChatRuntime, showcase: Showcase) -> list[tuple[str, str]]:
    """(file, caption) for every image made: its number, purpose, caption and copy."""
    services = await runtime.get()
    found = []
    for item in showcase.items:
        if not item.made or item.job_id is None:
            continue
        job = await services.ledger.get(item.job_id, owner=showcase.owner)
        path = await image_file(runtime, job, 0)
        if path is not None:
            words = " — ".join(part for part in (item.caption, item.marketing_copy) if part)
            found.append((str(path), f"{item.number:02d} · {item.purpose}: {words or item.subject}"))
    return found


async def downloads(runtime: ChatRuntime, showcase: Showcase) -> list[str]:
    """The finished gallery's page and zip as files the page can offer (empty before it is made)."""
    if not showcase.finished:
        return []
    services = await runtime.get()
    folder = runtime.cache_dir() / "showcases" / str(showcase.id)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for which, name in (("page", f"showcase-{str(showcase.id)[:8]}.html"),
                        ("zip", f"showcase-{str(showcase.id)[:8]}.zip")):
        target: Path = folder / name
        if not target.exists():
            try:
                target.write_bytes(await gallery_file(services.ledger, showcase, which))
            except AtelierError:
                continue  # the note says what is missing; the other file may still be there
        files.append(str(target))
    return files
