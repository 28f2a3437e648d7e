"""Edit an image the person has: the instruction becomes an img2img / edit job on the image it names (no LLM call).

"Make the background of this photo blue", "edit my last image: add a hat", "mude o fundo desta foto". The image is
either a stored input the run names (`configurable.input_image`: the name POST /inputs or `atelier inputs add`
returned; never a path) or the first finished image of the conversation's previous turn, read as the caller (a job
id in the state that is not the caller's is refused like an unknown one) and copied into the inputs store. The
instruction is the prompt: edit models (Qwen-Image-Edit) take an instruction, and an img2img workflow repaints the
picture towards the same words. The design is fitted and checked like any other before approval.
"""

from __future__ import annotations

import asyncio
import re

from atelier.agents.cost_router import RouteChoice
from atelier.agents.design_check import check_design
from atelier.agents.planner import Brief
from atelier.agents.visual_designer import Design
from atelier.tools.comfyui.fitting import fit_params
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.errors import AtelierError
from atelier.tools.inputs import InputStore, resolve_input
from atelier.tools.ledger.service import LedgerService
from atelier.tools.ledger.store import JobNotFoundError
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings

__all__ = ["NoImageToEditError", "edit_design", "edit_instruction", "image_to_edit"]

# Leading words that address the image rather than say what to change (English and Portuguese).
_ADDRESS = re.compile(
    r"^\s*(please\s+|por favor\s*,?\s*)?((edit|retouch|change|modify|edite|edita|altere|modifique|retoque)\s+"
    r"(the|this|that|my|a|esta|essa|minha|a|o)?\s*(last|latest|previous|última|ultima)?\s*"
    r"(image|picture|photo|imagem|foto)\s*[:,-]?\s*)?", re.I)


class NoImageToEditError(AtelierError):
    """The request edits an image, but the run names none and the conversation made none."""


def edit_instruction(text: str) -> str:
    """What to change: the request without the words that only point at the image."""
    cleaned = text.strip()
    instruction = _ADDRESS.sub("", cleaned, count=1).strip(" ,:;-")
    return instruction or cleaned


async def image_to_edit(ledger: LedgerService | None, settings: Settings, *, owner: str, named: str | None,
                        previous_jobs: list[str]) -> tuple[str, str]:
    """(stored input name, where it came from): the input the run names, else the first finished image of the
    previous turn's jobs that the owner can read; NoImageToEditError saying how to give one otherwise."""
    if named:
        await asyncio.to_thread(resolve_input, named, settings)  # refuses paths, links and unknown names
        return named, f"your uploaded image {named}"
    if ledger is not None:
        for job_id in previous_jobs[:16]:
            try:
                job = await ledger.get(job_id, owner=owner)
            except (JobNotFoundError, ValueError):
                continue
            if job.status != "succeeded" or not job.outputs:
                continue
            image = await ledger.output(job, 0)
            stored = await asyncio.to_thread(InputStore(settings).put, image.data, filename=f"job-{job.id}.png")
            return stored.name, f"the image of job {str(job.id)[:8]}"
    raise NoImageToEditError("there is no image to edit in this conversation: make one first, or upload yours "
                             "(POST /inputs on the job API, `atelier inputs add FILE`) and pass its name as the run "
                             "option input_image")


def edit_design(instruction: str, source: str, route: RouteChoice, template: WorkflowTemplate, settings: Settings,
                *, owner: str, key: str) -> Design:
    """The edit job for `source` (a stored input name) on the routed img2img/edit workflow, fitted and checked as
    the ledger and the worker will check it."""
    brief = Brief(purpose="edit", subject=instruction[:500])
    params = GenerationParams(prompt=instruction, input_image=source)
    fitted = fit_params(template, params, max_steps=settings.max_steps, max_batch_size=settings.max_batch_size)
    design = Design(brief=brief, route=route, params=fitted.params, style_used=[], fitted=list(fitted.notes))
    check_design(design, template, settings, owner=owner, key=key, number=1)
    return design
