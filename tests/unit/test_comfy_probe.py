"""The one ComfyUI probe: up, down, an answer that is not ComfyUI's, the most free VRAM, the first that answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from atelier.tools.comfyui.probe import (
    ComfyStatus,
    first_up,
    most_free_vram,
    probe,
    probe_all,
    probe_all_blocking,
    probe_stats,
)
from atelier.tools.comfyui.rest import ComfyREST
from atelier.tools.errors import ComfyHTTPError, ComfyUnreachableError
from tests.fakes.comfyui_catalog import gpu_device
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama

GIB = 2**30


@pytest.fixture
def gpu_comfy() -> Iterator[FakeComfyUI]:
    """A fake ComfyUI reporting a 24 GiB card with 20 GiB free."""
    with FakeComfyUI(devices=[gpu_device(vram_total=24 * GIB, vram_free=20 * GIB)]) as fake:
        yield fake


def _answering(status: int, body: str, content_type: str = "application/json") -> httpx.MockTransport:
    """A server answering every request with this status and body (something that is not ComfyUI)."""
    return httpx.MockTransport(lambda request: httpx.Response(status, text=body,
                                                              headers={"content-type": content_type}))


@pytest.mark.asyncio
async def test_a_running_comfyui_is_up_with_its_stats(gpu_comfy: FakeComfyUI) -> None:
    status = await probe(gpu_comfy.url, timeout=2)
    assert status.up and status.error is None and status.reason == ""
    assert status.stats is not None and status.stats.comfyui_version == "0.3.64"
    assert status.vram_free_gb == 20.0 and status.vram_total_bytes == 24 * GIB
    assert status.seconds >= 0 and status.url == gpu_comfy.url


@pytest.mark.asyncio
async def test_a_closed_port_is_down_with_the_transport_reason(closed_port_url: str) -> None:
    status = await probe(closed_port_url, timeout=2)
    assert not status.up and status.stats is None
    assert status.vram_free_gb is None and status.vram_total_bytes is None
    assert isinstance(status.error, ComfyUnreachableError) and status.reason == status.error.reason
    assert "COMFYUI_URLS" in str(status.error)


@pytest.mark.asyncio
async def test_a_server_that_is_not_comfyui_is_down(fake_ollama: FakeOllama) -> None:
    ollama = await probe(fake_ollama.url, timeout=2)  # a real server, but /system_stats is 404 there
    assert not ollama.up and isinstance(ollama.error, ComfyHTTPError) and ollama.error.status == 404

    for status, body in [(200, '{"status": "ok"}'), (200, "[1, 2]"), (200, '{"system": {}, "devices": "gpu"}'),
                         (200, "<html>welcome</html>"), (500, "{}")]:
        answer = await probe("http://comfy.invalid:8188", timeout=2, transport=_answering(status, body))
        assert not answer.up and isinstance(answer.error, ComfyHTTPError), body
        assert "http://comfy.invalid:8188/system_stats" in answer.reason, body


@pytest.mark.asyncio
async def test_the_rest_client_refuses_an_answer_that_is_not_comfyuis_with_a_clear_error() -> None:
    rest = ComfyREST("http://comfy.invalid:8188", transport=_answering(200, '{"status": "ok"}'))
    try:
        with pytest.raises(ComfyHTTPError, match=r"not ComfyUI's /system_stats: \{'status': 'ok'\}"):
            await rest.system_stats()
    finally:
        await rest.aclose()


@pytest.mark.asyncio
async def test_a_malformed_url_is_down_not_an_exception() -> None:
    status = await probe("http://comfy:port", timeout=2)
    assert not status.up and "not a valid URL" in status.reason


@pytest.mark.asyncio
async def test_all_servers_the_most_free_vram_and_the_first_that_answers(
    gpu_comfy: FakeComfyUI, fake_comfy: FakeComfyUI, closed_port_url: str
) -> None:
    urls = [closed_port_url, fake_comfy.url, gpu_comfy.url]
    statuses = await probe_all(urls, timeout=2)
    assert [(s.url, s.up) for s in statuses] == [(closed_port_url, False), (fake_comfy.url, True),
                                                 (gpu_comfy.url, True)]

    cpu_free = (await probe(fake_comfy.url)).vram_free_gb
    assert cpu_free is not None
    assert await most_free_vram(urls, timeout=2) == max(20.0, cpu_free)
    assert await most_free_vram([closed_port_url], timeout=2) is None
    assert await most_free_vram([], timeout=2) is None

    assert await first_up(urls, timeout=2) == fake_comfy.url  # in the order given, the down one skipped
    with pytest.raises(ComfyUnreachableError) as caught:
        await first_up([closed_port_url, "http://comfy:port"], timeout=2)
    assert closed_port_url in str(caught.value) and "not a valid URL" in caught.value.reason


@pytest.mark.asyncio
async def test_the_blocking_probe_works_even_on_a_thread_running_a_loop(fake_comfy: FakeComfyUI,
                                                                         closed_port_url: str) -> None:
    # Prometheus may collect on any thread, this one runs a loop: the probe runs on a loop of its own.
    statuses = probe_all_blocking([fake_comfy.url, closed_port_url], timeout=2)
    assert [s.up for s in statuses] == [True, False]
    assert await asyncio.to_thread(probe_all_blocking, [fake_comfy.url], timeout=2) != []
    assert probe_all_blocking([], timeout=2) == []


@pytest.mark.asyncio
async def test_an_open_client_reads_up_then_down_once_its_server_stops(fake_comfy: FakeComfyUI) -> None:
    rest = ComfyREST(fake_comfy.url)
    try:
        first = await probe_stats(rest, fake_comfy.url)
        second = await probe_stats(rest, fake_comfy.url)
    finally:
        await rest.aclose()
    assert isinstance(first, ComfyStatus) and first.up and second.up
    fake_comfy.stop()
    rest = ComfyREST(fake_comfy.url, timeout=2)
    try:
        gone = await probe_stats(rest, fake_comfy.url)
    finally:
        await rest.aclose()
    assert not gone.up and isinstance(gone.error, ComfyUnreachableError)
