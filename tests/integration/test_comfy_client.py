"""The async ComfyUI client against the protocol-faithful fake: every transcript case, drops and restarts."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from atelier.tools.comfyui.client import ComfyClient
from atelier.tools.comfyui.events import (
    Cached,
    ComfyEvent,
    NodeExecuting,
    NodeOutput,
    Preview,
    Queued,
    Reconnected,
    Started,
    StepProgress,
    Succeeded,
)
from atelier.tools.errors import (
    ComfyExecutionError,
    ComfyHTTPError,
    ComfyInterruptedError,
    ComfyLostError,
    ComfyUnreachableError,
    ComfyValidationError,
)
from atelier.tools.schemas import ImageRef
from tests.fakes.comfyui_server import FakeComfyUI
from tests.integration import graphs

pytestmark = pytest.mark.asyncio


async def _first(events: list[ComfyEvent], kind: type, timeout: float = 10.0) -> ComfyEvent:
    """Wait until an event of this kind has been collected."""
    for _ in range(int(timeout / 0.01)):
        found = [e for e in events if isinstance(e, kind)]
        if found:
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {kind.__name__} within {timeout} s; got {events}")


async def test_success_events_outputs_and_png_bytes(fake_comfy: FakeComfyUI) -> None:
    events: list[ComfyEvent] = []
    async with ComfyClient(fake_comfy.url) as comfy:
        outcome = await comfy.run(graphs.probe(), on_event=events.append)
        [(node, ref)] = outcome.images
        data = await comfy.download(ref)
    assert node == "9" and ref.type == "output" and ref.filename.endswith(".png")
    kinds = [type(e) for e in events if not isinstance(e, Preview)]
    assert kinds == [Queued, Started, Cached, NodeExecuting, StepProgress, StepProgress, StepProgress,
                     NodeExecuting, NodeOutput, Succeeded]
    assert {e.prompt_id for e in events} == {outcome.prompt_id}
    assert [(e.value, e.max) for e in events if isinstance(e, StepProgress)] == [(1, 3), (2, 3), (3, 3)]
    assert any(isinstance(e, Preview) and e.data for e in events), "binary preview frames are surfaced"
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (32, 32)
    assert json.loads(image.info["prompt"]) == graphs.probe()
    assert "workflow" not in image.info  # only when a UI workflow is sent


async def test_ui_workflow_is_embedded_in_the_png(fake_comfy: FakeComfyUI) -> None:
    ui = {"nodes": [{"id": 1, "type": "ProbeTextToImage"}], "links": [], "version": 0.4}
    async with ComfyClient(fake_comfy.url) as comfy:
        outcome = await comfy.run(graphs.probe(), ui_workflow=ui)
        data = await comfy.download(outcome.images[0][1])
    assert json.loads(Image.open(io.BytesIO(data)).info["workflow"]) == ui


async def test_execution_error_names_node_and_exception(fake_comfy: FakeComfyUI) -> None:
    async with ComfyClient(fake_comfy.url) as comfy:
        with pytest.raises(ComfyExecutionError) as caught:
            await comfy.run(graphs.probe_fail())
    error = caught.value
    assert (error.node_id, error.node_type, error.exception_type, error.exception_message) == (
        "2", "ProbeFail", "RuntimeError", "boom")
    assert error.traceback, "ComfyUI's traceback is kept for --debug"


async def test_interrupt_a_running_prompt(fake_comfy: FakeComfyUI) -> None:
    events: list[ComfyEvent] = []
    async with ComfyClient(fake_comfy.url) as comfy:
        task = asyncio.create_task(comfy.run(graphs.probe(steps=200, step_seconds=0.02), on_event=events.append))
        first = await _first(events, StepProgress)
        await comfy.interrupt(first.prompt_id)
        with pytest.raises(ComfyInterruptedError) as caught:
            await task
    assert caught.value.prompt_id == first.prompt_id and caught.value.node_type == "ProbeTextToImage"


async def test_cancel_a_waiting_prompt_removes_it_from_the_queue(fake_comfy: FakeComfyUI) -> None:
    fake_comfy.pause()
    async with ComfyClient(fake_comfy.url) as comfy:
        queued = await comfy.submit(graphs.probe("waiting"))
        assert queued.prompt_id in (await comfy.queue()).pending
        await comfy.cancel(queued.prompt_id)
        events = [e async for e in comfy.events(queued.prompt_id)]
        assert queued.prompt_id not in await comfy.queue()
    fake_comfy.resume()
    assert events and type(events[-1]).__name__ == "Interrupted"
    assert fake_comfy.execution_counts.get(queued.prompt_id, 0) == 0


@pytest.mark.parametrize(
    ("graph", "error_type", "expected"),
    [
        (graphs.missing_link(), "prompt_outputs_failed_validation", "links to node 7, which is not in the workflow"),
        (graphs.out_of_range(), "prompt_outputs_failed_validation",
         "node 1 (ProbeTextToImage) input 'width': Value 1 smaller than min of 8"),
        (graphs.unknown_node(), "invalid_prompt", "Cannot execute because node NoSuchNode does not exist"),
        (graphs.no_output(), "prompt_no_outputs", "Prompt has no outputs"),
    ],
    ids=["missing-link", "out-of-range", "unknown-node", "no-output-node"],
)
async def test_validation_errors(
    fake_comfy: FakeComfyUI, graph: dict[str, object], error_type: str, expected: str
) -> None:
    async with ComfyClient(fake_comfy.url) as comfy:
        with pytest.raises(ComfyValidationError) as caught:
            await comfy.run(graph)
        assert await comfy.queue() == type(await comfy.queue())()  # nothing was queued
    assert caught.value.error_type == error_type
    assert expected in str(caught.value)


async def test_missing_checkpoint_names_file_folder_and_installed_ones(tmp_path: Path) -> None:
    from atelier.tools.comfyui.templates import load_workflow, render
    from atelier.tools.schemas import GenerationParams

    graph = render(load_workflow("txt2img"), GenerationParams(prompt="a fox", seed=1))
    with FakeComfyUI(models={"checkpoints": ["dreamshaper_8.safetensors"]}, output_dir=tmp_path) as fake:
        async with ComfyClient(fake.url) as comfy:
            with pytest.raises(ComfyValidationError) as caught:
                await comfy.run(graph)
    text = str(caught.value)
    assert "'v1-5-pruned-emaonly.safetensors' is missing" in text
    assert "ComfyUI/models/checkpoints/" in text and "dreamshaper_8.safetensors" in text


async def test_malformed_json_is_a_500_with_a_hint(fake_comfy: FakeComfyUI) -> None:
    async with ComfyClient(fake_comfy.url) as comfy:
        response = await comfy.rest.request("POST", "/prompt", content=b'{"prompt": {', headers={
            "content-type": "application/json"})
        assert response.status_code == 500
        with pytest.raises(ComfyHTTPError) as caught:
            await comfy.rest._json("POST", "/prompt", content=b"{")
    assert caught.value.status == 500 and "could not parse the request body" in str(caught.value)


@pytest.mark.parametrize(
    ("ref", "status"),
    [
        (ImageRef(filename="../../main.py"), 400),
        (ImageRef(filename="x.png", type="bogus"), 400),
        (ImageRef(filename="x.png", subfolder="../.."), 403),
        (ImageRef(filename="nope.png"), 404),
    ],
    ids=["dotdot-filename", "bad-type", "escaping-subfolder", "missing"],
)
async def test_view_guards(fake_comfy: FakeComfyUI, ref: ImageRef, status: int) -> None:
    async with ComfyClient(fake_comfy.url) as comfy:
        with pytest.raises(ComfyHTTPError) as caught:
            await comfy.download(ref)
    assert caught.value.status == status and ref.filename in str(caught.value)


async def test_socket_drop_mid_run_reconnects_and_finishes(fake_comfy: FakeComfyUI) -> None:
    events: list[ComfyEvent] = []
    async with ComfyClient(fake_comfy.url) as comfy:
        task = asyncio.create_task(comfy.run(graphs.probe(steps=30, step_seconds=0.01), on_event=events.append))
        await _first(events, StepProgress)
        fake_comfy.drop_sockets()
        outcome = await asyncio.wait_for(task, 20)
        assert comfy.reconnects >= 1
    assert outcome.images and any(isinstance(e, Reconnected) for e in events)
    assert fake_comfy.execution_counts[outcome.prompt_id] == 1


async def test_silent_socket_triggers_resync_and_missed_end_is_recovered(fake_comfy: FakeComfyUI) -> None:
    events: list[ComfyEvent] = []
    async with ComfyClient(fake_comfy.url, silence_seconds=0.2) as comfy:
        task = asyncio.create_task(comfy.run(graphs.probe(steps=10, step_seconds=0.02), on_event=events.append))
        await _first(events, StepProgress)
        fake_comfy.go_silent(3.0)  # the prompt ends while the socket says nothing
        outcome = await asyncio.wait_for(task, 20)
    reasons = [e.reason for e in events if isinstance(e, Reconnected)]
    assert any("no message" in r for r in reasons)
    assert outcome.images and isinstance(events[-1], Succeeded)


async def test_long_job_that_keeps_progressing_is_never_timed_out(fake_comfy: FakeComfyUI) -> None:
    async with ComfyClient(fake_comfy.url, silence_seconds=0.15) as comfy:
        outcome = await comfy.run(graphs.probe(steps=12, step_seconds=0.05))  # 0.6 s ≫ silence window
    assert outcome.images


async def test_restart_mid_run_reports_the_prompt_lost(fake_comfy: FakeComfyUI) -> None:
    events: list[ComfyEvent] = []
    async with ComfyClient(fake_comfy.url) as comfy:
        task = asyncio.create_task(comfy.run(graphs.probe(steps=100, step_seconds=0.02), on_event=events.append))
        first = await _first(events, StepProgress)
        fake_comfy.restart(down_seconds=0.3)
        with pytest.raises(ComfyLostError) as caught:
            await asyncio.wait_for(task, 20)
        # the server is back: the same client can run the prompt again
        again = await comfy.run(graphs.probe(steps=2))
    assert caught.value.prompt_id == first.prompt_id and "restarted" in str(caught.value)
    assert again.images


async def test_server_down_longer_than_allowed_gives_up_clearly(fake_comfy: FakeComfyUI) -> None:
    events: list[ComfyEvent] = []
    async with ComfyClient(fake_comfy.url, down_seconds=0.5) as comfy:
        task = asyncio.create_task(comfy.run(graphs.probe(steps=100, step_seconds=0.02), on_event=events.append))
        await _first(events, StepProgress)
        fake_comfy.restart(down_seconds=5.0)
        with pytest.raises(ComfyUnreachableError) as caught:
            await asyncio.wait_for(task, 20)
    assert fake_comfy.url in str(caught.value)


async def test_retried_submit_with_the_same_id_is_not_sent_twice(fake_comfy: FakeComfyUI) -> None:
    async with ComfyClient(fake_comfy.url) as comfy:
        first = await comfy.run(graphs.probe(seed=5), prompt_id="job-42")
        second = await comfy.run(graphs.probe(seed=5), prompt_id="job-42")  # e.g. a worker retrying
    assert first.prompt_id == second.prompt_id == "job-42"
    assert second.images == first.images
    assert fake_comfy.execution_counts["job-42"] == 1


async def test_unreachable_server_names_url_and_fix(closed_port_url: str) -> None:
    async with ComfyClient(closed_port_url) as comfy:
        with pytest.raises(ComfyUnreachableError) as caught:
            await comfy.run(graphs.probe())
        with pytest.raises(ComfyUnreachableError):
            await comfy.system_stats()
    assert closed_port_url in str(caught.value) and "COMFYUI_URLS" in str(caught.value)


async def test_messages_of_other_prompts_and_clients_are_filtered(fake_comfy: FakeComfyUI) -> None:
    seen: dict[str, list[ComfyEvent]] = {"a": [], "b": [], "c": []}
    async with ComfyClient(fake_comfy.url) as one, ComfyClient(fake_comfy.url) as two:
        results = await asyncio.gather(
            one.run(graphs.probe("a", seed=1), on_event=seen["a"].append),
            one.run(graphs.probe("b", seed=2), on_event=seen["b"].append),  # same socket, another prompt
            two.run(graphs.probe("c", seed=3), on_event=seen["c"].append),  # another client
        )
    for key, outcome in zip("abc", results, strict=True):
        assert {e.prompt_id for e in seen[key]} == {outcome.prompt_id}
        assert sum(isinstance(e, StepProgress) for e in seen[key]) == 3
        assert isinstance(seen[key][-1], Succeeded)


async def test_second_identical_prompt_is_cached_and_resends_the_file(fake_comfy: FakeComfyUI) -> None:
    events: list[ComfyEvent] = []
    async with ComfyClient(fake_comfy.url) as comfy:
        first = await comfy.run(graphs.probe(seed=9))
        second = await comfy.run(graphs.probe(seed=9), on_event=events.append)
    cached = next(e for e in events if isinstance(e, Cached))
    assert set(cached.nodes) == {"1", "9"}
    assert second.images == first.images


async def test_info_routes_upload_and_free(fake_comfy: FakeComfyUI, tmp_path: Path) -> None:
    png = tmp_path / "ref.png"
    Image.new("RGB", (24, 16), "red").save(png)
    async with ComfyClient(fake_comfy.url) as comfy:
        stats = await comfy.system_stats()
        assert stats.comfyui_version and stats.devices and stats.devices[0].vram_total > 0
        info = await comfy.object_info("CheckpointLoaderSimple")
        assert "v1-5-pruned-emaonly.safetensors" in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        assert await comfy.rest.models("upscale_models") == ["RealESRGAN_x4plus.pth"]
        first = await comfy.upload_image(png)
        same = await comfy.rest.upload_image(png, overwrite=False)  # identical bytes: ComfyUI keeps the name
        Image.new("RGB", (24, 16), "green").save(png)
        other = await comfy.rest.upload_image(png, overwrite=False)  # different bytes: renamed
        assert first.name == same.name == "ref.png" and other.name == "ref (1).png"
        await comfy.free()
        assert (await comfy.queue()).running == []
