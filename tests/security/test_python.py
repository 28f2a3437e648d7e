"""Attacks through the Python surface (`atelier.open_atelier`'s services, the toolkit, the ledger): the same refusals
as every front end, because the checks live where the work enters — the ledger's planning and the inputs store.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from atelier.tools.errors import InputImageError, WorkflowError
from atelier.tools.inputs import InputStore, resolve_input
from atelier.tools.ledger.models import JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore, OutputStoreError
from atelier.tools.schemas import GenerationParams
from atelier.tools.toolkit import TOOLS, ToolContext, run_tool

pytestmark = pytest.mark.asyncio


def _png() -> bytes:
    """A small real PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "blue").save(buffer, format="PNG")
    return buffer.getvalue()


async def test_the_ledger_refuses_server_paths_from_any_caller(local_svc: LedgerService, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png())
    inputs = local_svc.settings.data_dir / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    os.symlink(secret, inputs / "linked.png")
    for image in (str(secret), "../secret.png", "linked.png", "missing.png", str(inputs / ".." / "x.png")):
        with pytest.raises(InputImageError):
            await local_svc.submit(JobRequest(params=GenerationParams(prompt="x", input_image=image),
                                              workflow="img2img"))
    for workflow in ("/etc/flow.json", "../flows/x", "flow.json", "a\x00b"):
        with pytest.raises(WorkflowError):
            await local_svc.submit(JobRequest(params=GenerationParams(prompt="x"), workflow=workflow))
    assert await local_svc.list_jobs() == []
    stored = InputStore(local_svc.settings).put(_png(), filename="mine.png")
    made = await local_svc.submit(JobRequest(params=GenerationParams(prompt="x", input_image=stored.name),
                                             workflow="img2img"))
    assert made.job.params["input_image"] == stored.name
    assert resolve_input(stored.name, local_svc.settings) == stored.path


async def test_tools_and_the_output_store_stay_inside_their_folders(local_svc: LedgerService, tmp_path: Path) -> None:
    ctx = ToolContext(settings=local_svc.settings, ledger=local_svc, owner="ana")
    submit = next(spec for spec in TOOLS if spec.name == "submit_job")
    with pytest.raises(InputImageError):
        await run_tool(submit, ctx, {"prompt": "x", "workflow": "img2img", "input_image": "/etc/hostname"})
    store = LocalOutputStore(tmp_path / "outputs")
    (tmp_path / "private.txt").write_text("not an output")
    with pytest.raises(OutputStoreError, match="outside this store"):
        store.read((tmp_path / "private.txt").as_uri())
    assert not store.exists((tmp_path / "private.txt").as_uri())


async def test_the_result_cache_never_answers_across_owners(local_svc: LedgerService) -> None:
    from atelier.tools.ledger.planning import plan_job

    request = JobRequest(params=GenerationParams(prompt="a secret product", seed=1), workflow="txt2img", owner="ana")
    other = request.model_copy(update={"owner": "bo"})
    assert plan_job(request, local_svc.settings).cache_key != plan_job(other, local_svc.settings).cache_key
