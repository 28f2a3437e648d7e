"""The blocking facade keeps one socket across calls and raises the same errors as the async client."""

from __future__ import annotations

import pytest

from atelier.tools.comfyui.events import ComfyEvent, StepProgress
from atelier.tools.comfyui.sync import SyncComfyClient
from atelier.tools.errors import ComfyExecutionError
from tests.fakes.comfyui_server import FakeComfyUI
from tests.integration import graphs


def test_sync_client_runs_downloads_and_reports_errors(fake_comfy: FakeComfyUI, tmp_path) -> None:
    events: list[ComfyEvent] = []
    with SyncComfyClient(fake_comfy.url) as comfy:
        first = comfy.run(graphs.probe(seed=1), on_event=events.append)
        second = comfy.run(graphs.probe(seed=2))  # same client, same socket, a later call
        saved = comfy.save(first.images[0][1], tmp_path)
        assert comfy.download(second.images[0][1]).startswith(b"\x89PNG")
        assert comfy.system_stats().comfyui_version == "0.3.64"
        assert comfy.queue().running == []
        with pytest.raises(ComfyExecutionError):
            comfy.run(graphs.probe_fail())
    assert saved.read_bytes().startswith(b"\x89PNG")
    assert sum(isinstance(e, StepProgress) for e in events) == 3
