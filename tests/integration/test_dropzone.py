"""`atelier watch DIR`: the drop zone on real PostgreSQL and the fake ComfyUI, SIGKILLed and restarted."""

from __future__ import annotations

import os
import random
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fakes.comfyui_server import FakeComfyUI

ROOT = Path(__file__).resolve().parents[2]
ATELIER = Path(sys.executable).with_name("atelier")

pytestmark = [pytest.mark.timeout(120)]


def png(seed: int, side: int = 8) -> bytes:
    """A small valid PNG whose pixels depend on `seed` (distinct content, distinct hash)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes((seed * 37 + x * 11 + y * 5) % 256 for x in range(side * 3)) for y in range(side))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


class Watcher:
    """`atelier watch DIR --worker` as a process the test may SIGKILL and restart."""

    def __init__(self, root: Path, env: dict[str, str], logs: Path) -> None:
        self.root = root
        self.env = env
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0

    def start(self) -> None:
        """Start a watcher with an in-process worker."""
        self.started += 1
        log = (self.logs / f"watch-{self.started}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(ATELIER), "watch", str(self.root), "--worker", "--verbose",
             "--stable-seconds", "0.3", "--rescan-seconds", "0.5", "--lease-seconds", "2"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL it: no cleanup of any kind."""
        assert self.proc is not None and self.proc.poll() is None, self.log_text()
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM it and return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                raise
        return self.proc.returncode

    def log_text(self) -> str:
        """Every log written so far (for failure messages)."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("watch-*.log")))


@pytest.fixture
def zone(tmp_path: Path, machine_pg_url: str, fake_comfy: FakeComfyUI) -> Iterator[tuple[Path, Watcher]]:
    """A drop-zone folder and its (not yet started) watcher; stopped at the end."""
    root = tmp_path / "drop"
    env = os.environ | {"DATABASE_URL": machine_pg_url, "COMFYUI_URLS": fake_comfy.url,
                        "ATELIER_DATA_DIR": str(tmp_path / "data"), "ATELIER_OUTPUT_DIR": str(tmp_path / "store"),
                        "ATELIER_LEASE_SECONDS": "2"}
    watcher = Watcher(root, env, tmp_path)
    yield root, watcher
    if watcher.proc is not None and watcher.proc.poll() is None:
        watcher.stop()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, watcher: Watcher) -> None:
    """Poll `condition` until true; fail with the watcher's log after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}\n{watcher.log_text()[-6000:]}")


def files(folder: Path) -> list[Path]:
    """Files (not error notes or hidden ones) anywhere under `folder`."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def drop(path: Path, data: bytes) -> None:
    """Write a file into the inbox in one go."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.mark.slow
def test_sigkilled_twice_every_file_processed_exactly_once(
    zone: tuple[Path, Watcher], machine_pg_url: str, fake_comfy: FakeComfyUI
) -> None:
    root, watcher = zone
    rng = random.Random(int(os.environ.get("ATELIER_CHAOS_SEED", "8")))
    fake_comfy.step_seconds = 0.01  # ~0.2 s per 20-step image: jobs are in flight when the kills land
    expected: dict[str, str] = {}  # file name → workflow
    plan = [(f"prompt-{i:02d}.txt", "txt2img", f"a lighthouse, study {i}".encode()) for i in range(24)]
    plan += [(f"photo-{i}.png", "img2img", png(i)) for i in range(4)]
    plan += [(f"small-{i}.png", "upscale", png(100 + i)) for i in range(2)]
    rng.shuffle(plan)
    watcher.start()
    wait_until(lambda: (root / "inbox" / "upscale").is_dir(), 20, "the inbox folders", watcher)
    # A sidecar prompt for one image, written before its image.
    drop(root / "inbox" / "img2img" / "photo-0.txt", b"the same scene at night")
    kills = sorted(rng.uniform(0.3, 3.0) for _ in range(2))
    started = time.monotonic()
    for index, (name, workflow, data) in enumerate(plan):
        drop(root / "inbox" / workflow / name, data)
        expected[name] = workflow
        if index % 10 == 9:
            time.sleep(0.4)
        if kills and time.monotonic() - started >= kills[0]:
            kills.pop(0)
            watcher.kill()
            watcher.start()
    for moment in kills:  # the kills not yet done while dropping
        time.sleep(max(0.0, moment - (time.monotonic() - started)))
        watcher.kill()
        watcher.start()
    assert watcher.started == 3

    def finished() -> bool:
        return len([p for p in files(root / "done") if p.suffix != ".txt" or p.parent.name == "txt2img"]) \
            == len(expected) and not files(root / "processing") and not files(root / "inbox")

    wait_until(finished, 60, "every file in done/", watcher)
    assert watcher.stop() == 0, watcher.log_text()

    assert not files(root / "failed"), watcher.log_text()
    for name, workflow in expected.items():
        assert [p.name for p in (root / "done" / workflow).glob(f"{Path(name).stem}*{Path(name).suffix}")] == [name]
        outputs = list((root / "outputs" / workflow).glob(f"{Path(name).stem}-*"))
        assert outputs and all(p.stat().st_size > 0 for p in outputs), name
    assert (root / "done" / "img2img" / "photo-0.txt").read_text() == "the same scene at night"
    with psycopg.connect(machine_pg_url) as conn:
        rows = conn.execute("SELECT idempotency_key, count(*), min(status), max(status), min(owner), "
                            "max(params->>'prompt') FILTER (WHERE idempotency_key LIKE 'drop:img2img:%%' "
                            "AND params->>'prompt' = 'the same scene at night') "
                            "FROM jobs GROUP BY idempotency_key").fetchall()
        jobs = conn.execute("SELECT id::text, params->>'input_image' FROM jobs").fetchall()
    assert len(rows) == len(expected)
    assert all(key.startswith("drop:") and count == 1 and low == high == "succeeded" and owner == "dropzone"
               for key, count, low, high, owner, _ in rows), rows
    assert sum(1 for *_, sidecar in rows if sidecar) == 1  # the sidecar's prompt reached its image's job
    images = [image for _, image in jobs if image]
    assert len(images) == 6 and all(re.fullmatch(r"[0-9a-f]{64}\.(png|jpg|webp)", image) for image in images)
    counts = fake_comfy.execution_counts
    assert all(counts[job_id] <= 1 for job_id, _ in jobs), counts  # no prompt ran twice on ComfyUI


def test_half_written_file_is_never_taken(zone: tuple[Path, Watcher]) -> None:
    root, watcher = zone
    watcher.start()
    inbox = root / "inbox"
    wait_until(lambda: (inbox / "img2img").is_dir(), 20, "the inbox folders", watcher)
    # A prompt still open for writing, and an image cut short (closed, but its PNG has no end yet).
    writer = (inbox / "txt2img" / "slow.txt").open("wb")
    writer.write(b"a harbour ")
    writer.flush()
    whole = png(7)
    (inbox / "img2img" / "cut.png").write_bytes(whole[: len(whole) // 2])
    time.sleep(2.0)  # several stability windows (0.3 s) and rescans (0.5 s)
    assert (inbox / "txt2img" / "slow.txt").exists() and (inbox / "img2img" / "cut.png").exists()
    assert not files(root / "processing") and not files(root / "done") and not files(root / "failed")
    writer.write(b"at dawn")
    writer.close()
    with (inbox / "img2img" / "cut.png").open("ab") as rest:
        rest.write(whole[len(whole) // 2:])
    wait_until(lambda: len(files(root / "done")) == 2, 30, "both files in done/", watcher)
    assert not files(inbox) and not files(root / "processing") and not files(root / "failed")
    outputs = root / "outputs"
    assert list((outputs / "txt2img").glob("slow-1.*")) and list((outputs / "img2img").glob("cut-1.*"))
    assert watcher.stop() == 0


def test_bad_files_go_to_failed_with_the_reason(zone: tuple[Path, Watcher]) -> None:
    root, watcher = zone
    watcher.start()
    inbox = root / "inbox"
    wait_until(lambda: (inbox / "txt2img").is_dir(), 20, "the inbox folders", watcher)
    drop(inbox / "txt2img" / "notes.pdf", b"%PDF-1.4 not an image")
    drop(inbox / "txt2img" / "picture.png", png(3))
    drop(inbox / "txt2img" / "empty.txt", b"   \n")
    drop(inbox / "no-such-workflow" / "x.txt", b"a cat")
    drop(inbox / "txt2img" / "good.txt", b"a cat on a windowsill")
    wait_until(lambda: len(files(root / "failed")) == 8 and len(files(root / "done")) == 1, 30,
               "four files in failed/ with their notes", watcher)
    failed = root / "failed"
    reasons = {p.name: p.read_text() for p in files(failed) if p.name.endswith(".error.txt")}
    assert set(reasons) == {"notes.pdf.error.txt", "picture.png.error.txt", "empty.txt.error.txt", "x.txt.error.txt"}
    assert ".txt" in reasons["notes.pdf.error.txt"] and ".png" in reasons["notes.pdf.error.txt"]
    assert "takes no input image" in reasons["picture.png.error.txt"]
    assert "empty" in reasons["empty.txt.error.txt"]
    assert "txt2img" in reasons["x.txt.error.txt"]  # names the workflows one may use
    assert (failed / "txt2img" / "notes.pdf").read_bytes() == b"%PDF-1.4 not an image"
    assert not files(inbox) and not files(root / "processing")
    assert watcher.stop() == 0
