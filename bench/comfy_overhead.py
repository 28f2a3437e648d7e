"""Client overhead against a fake ComfyUI with a fixed per-job time, beside the user's polling client.

For each job: end-to-end time (submit → image bytes in hand) minus the fake's own execution
time (its execution_start → execution_success timestamps in /history) is the overhead the
client adds. Atelier's WebSocket client is measured beside the original sketch (POST, then
poll /history every 2 s, then /view), reimplemented here as the baseline, in the same run.
Run: .venv/bin/python bench/comfy_overhead.py [--jobs 100] [--baseline-jobs 100] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier.tools.comfyui.client import ComfyClient
from bench.smoke import parse_args
from tests.fakes.comfyui_server import FakeComfyUI

STEPS, STEP_SECONDS = 5, 0.02  # the fake runs each job for 0.1 s
POLL_SECONDS = 2.0  # the user's original client polls /history every 2 s
SMOKE = {"jobs": 3, "baseline_jobs": 1}


def job(seed: int) -> dict[str, Any]:
    """A fixed-time job: a weight-free sampler-like node and a SaveImage."""
    return {
        "1": {"class_type": "ProbeTextToImage", "inputs": {
            "text": "bench", "width": 32, "height": 32, "steps": STEPS, "seed": seed, "step_seconds": STEP_SECONDS}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
    }


def execution_seconds(entry: dict[str, Any]) -> float:
    """The fake's own execution time of a prompt, from its /history status messages (ms timestamps)."""
    stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
    return float(stamps["execution_success"] - stamps["execution_start"]) / 1000.0


async def atelier_client(url: str, jobs: int, progress: Progress) -> list[float]:
    """Overheads of Atelier's client: one persistent socket, events pushed, bytes downloaded."""
    overheads = []
    task = progress.add_task("atelier client", total=jobs)
    async with ComfyClient(url) as comfy, httpx.AsyncClient(base_url=url) as http:
        for i in range(jobs):
            started = time.perf_counter()
            outcome = await comfy.run(job(10_000 + i))
            for _, ref in outcome.images:
                await comfy.download(ref)
            elapsed = time.perf_counter() - started
            entry = (await http.get(f"/history/{outcome.prompt_id}")).json()[outcome.prompt_id]
            overheads.append(elapsed - execution_seconds(entry))
            progress.advance(task)
    return overheads


def polling_client(url: str, jobs: int, progress: Progress) -> list[float]:
    """Overheads of the original sketch: POST /prompt, poll /history every 2 s, then GET /view."""
    overheads = []
    task = progress.add_task("polling baseline", total=jobs)
    with httpx.Client(base_url=url) as http:
        for i in range(jobs):
            started = time.perf_counter()
            prompt_id = http.post("/prompt", json={"prompt": job(20_000 + i), "client_id": uuid.uuid4().hex}).json()[
                "prompt_id"
            ]
            while True:
                time.sleep(POLL_SECONDS)
                history = http.get(f"/history/{prompt_id}").json()
                if prompt_id in history:
                    break
            entry = history[prompt_id]
            for output in entry["outputs"].values():
                for image in output.get("images", []):
                    http.get("/view", params=image).raise_for_status()
            overheads.append(time.perf_counter() - started - execution_seconds(entry))
            progress.advance(task)
    return overheads


def main() -> None:
    """Run both clients against one fake and print medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--baseline-jobs", type=int, default=100)
    args = parse_args(parser, SMOKE)
    console = Console()
    with FakeComfyUI() as fake, Progress(console=console) as progress:
        ours = asyncio.run(atelier_client(fake.url, args.jobs, progress))
        base = polling_client(fake.url, args.baseline_jobs, progress)
    ours_ms, base_ms = statistics.median(ours) * 1000, statistics.median(base) * 1000
    p95 = sorted(ours)[int(0.95 * (len(ours) - 1))] * 1000
    console.print(f"job time in the fake: {STEPS} steps × {STEP_SECONDS * 1000:.0f} ms = {STEPS * STEP_SECONDS:.2f} s")
    console.print(f"atelier client  overhead: median {ours_ms:8.2f} ms  p95 {p95:8.2f} ms  ({len(ours)} jobs)")
    console.print(
        f"polling baseline overhead: median {base_ms:8.2f} ms  ({len(base)} jobs, poll every {POLL_SECONDS:g} s)"
    )
    console.print(f"ratio baseline/atelier: {base_ms / ours_ms:.1f}x   target: atelier median < 20 ms → "
                  f"{'met' if ours_ms < 20 else 'NOT met'}")


if __name__ == "__main__":
    main()
