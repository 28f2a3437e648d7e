"""A request for options in the chat, through gradio_client: one grid of earlier images beside new variations."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from atelier.chat.grid import LABEL, TILE
from tests.chat_server import ServerThread, chat_settings, message_files, message_text
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama

pytestmark = pytest.mark.slow


def test_options_come_as_one_grid_beside_the_new_variations(
    fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, embedded_pg_url: str, tmp_path: Path
) -> None:
    import psycopg
    from gradio_client import Client

    settings = chat_settings(tmp_path, fake_comfy.url, fake_ollama.url, embedded_pg_url)
    with ServerThread(settings, embedded_pg_url) as url:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        for prompt in ("draw a red fox in the snow", "draw a fox cub in autumn leaves"):
            history = client.predict(prompt, [], "", "auto", "auto", api_name="/chat")[1]
            assert message_text(history[-1]).startswith("Done:")
        with psycopg.connect(embedded_pg_url) as conn:  # the chat's own indexer puts both into the memory
            for _ in range(600):
                if conn.execute("SELECT count(*) FROM jobs WHERE memory_indexed_at IS NOT NULL").fetchone() == (2,):
                    break
                time.sleep(0.05)
        history = client.predict("find earlier images of foxes", [], "", "auto", "auto", api_name="/chat")[1]
        client.close()
    texts = [message_text(m) for m in history]
    listing = next(t for t in texts if t.startswith("2 earlier image(s) like “foxes”"))
    assert "red fox in the snow" in listing and "Making 3 new variation(s)" in listing
    grid_message = next(m for m in history if message_text(m).startswith("2 earlier image(s) like “foxes” (grey)"))
    with Image.open(message_files(grid_message)[0]) as grid:
        assert grid.size == (4 * TILE + 5 * 4, 2 * (TILE + LABEL) + 3 * 4)  # 5 cells: 4 in the first row, 1 below
        cells = [grid.getpixel((4 + (i % 4) * (TILE + 4) + TILE // 2, 4 + (i // 4) * (TILE + LABEL + 4) + TILE // 2))
                 for i in range(5)]
    blank = {(236, 240, 245), (230, 244, 234)}  # an empty earlier / new cell
    assert not blank & set(cells), "every cell shows its picture: the grid was redrawn once the variations were done"
    done = [t for t in texts if t.startswith("Done:")]
    assert len(done) == 3 and all("foxes" in t for t in done)  # each variation also on its own, to rate it
