"""`atelier submit | jobs | job | cancel | batch | worker` on real PostgreSQL, in-process and as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atelier.cli.main import app
from atelier.tools.ledger.service import LedgerService
from atelier.tools.settings import load_settings
from atelier.tools.worker.worker import Worker, WorkerOptions
from tests.fakes.comfyui_server import FakeComfyUI

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cli_env(machine_pg_url: str, tmp_path: Path, fake_comfy: FakeComfyUI) -> dict[str, str]:
    """Environment for the CLI: a fresh database, the fake ComfyUI, a temporary data folder."""
    return {"DATABASE_URL": machine_pg_url, "COMFYUI_URLS": fake_comfy.url, "ATELIER_DATA_DIR": str(tmp_path / "d"),
            "ATELIER_LEASE_SECONDS": "3"}


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def json_lines(text: str) -> list[dict[str, object]]:
    """Parse one JSON object per line."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def worker_thread(cli_env: dict[str, str]) -> Iterator[None]:
    """A worker running in a background thread for the length of the test."""
    settings = load_settings(database_url=cli_env["DATABASE_URL"], comfyui_urls=cli_env["COMFYUI_URLS"],
                             data_dir=cli_env["ATELIER_DATA_DIR"], lease_seconds=3)
    stop_flag = threading.Event()

    async def main() -> None:
        stop = asyncio.Event()
        async with LedgerService.open(settings, conninfo=cli_env["DATABASE_URL"]) as svc:
            worker = Worker(svc.ledger, settings, svc.store, WorkerOptions(lease_seconds=3))
            task = asyncio.create_task(worker.run(stop))
            await asyncio.to_thread(stop_flag.wait)
            stop.set()
            await task

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    yield
    stop_flag.set()
    thread.join(20)


def test_submit_show_list_and_cancel(cli_env: dict[str, str]) -> None:
    code, out, _ = run(cli_env, "submit", "a lighthouse at dusk", "--seed", "3", "--priority", "2")
    assert code == 0
    job_id = out.strip()
    uuid.UUID(job_id)
    code, out, _ = run(cli_env, "job", job_id, "--json")
    (shown,) = json_lines(out)
    assert shown["status"] == "queued" and shown["priority"] == 2
    assert shown["params"]["prompt"] == "a lighthouse at dusk" and shown["params"]["seed"] == 3  # type: ignore[index]
    code, out, _ = run(cli_env, "jobs", "--status", "queued", "--json")
    assert [j["id"] for j in json_lines(out)] == [job_id]
    code, out, _ = run(cli_env, "jobs")
    assert code == 0 and job_id[:8] in out and "queued" in out
    code, out, _ = run(cli_env, "cancel", job_id[:8])
    assert code == 0 and "cancelled" in out
    code, out, _ = run(cli_env, "job", job_id)
    assert "cancelled" in out and "a lighthouse at dusk" in out


def test_the_same_key_returns_the_same_job(cli_env: dict[str, str]) -> None:
    first = run(cli_env, "submit", "owl", "--key", "order-1")
    second = run(cli_env, "submit", "owl", "--key", "order-1")
    assert first[1] == second[1] and "already exists" in second[2]


def test_unknown_jobs_and_statuses_are_clear_errors(cli_env: dict[str, str]) -> None:
    missing = str(uuid.uuid4())
    shown = _atelier(os.environ | cli_env, "job", missing)
    assert shown.returncode == 1 and f"no job {missing}" in shown.stderr and "Traceback" not in shown.stderr
    code, _, err = run(cli_env, "jobs", "--status", "done")
    assert code == 2 and "unknown status 'done'" in err


def test_a_batch_reports_bad_rows_by_line_and_a_rerun_adds_nothing(cli_env: dict[str, str], tmp_path: Path) -> None:
    sheet = tmp_path / "products.csv"
    sheet.write_text("prompt,seed,size\nred mug,1,512x512\nblue mug,abc,512x512\ngreen mug,3,\n,4,\n")
    code, _, err = run(cli_env, "batch", str(sheet))
    assert code == 1
    assert "line 3" in err and "seed" in err and "line 5" in err
    assert "2 new job(s), 0 already in the ledger" in err
    code, _, err = run(cli_env, "batch", str(sheet))
    assert "0 new job(s), 2 already in the ledger" in err
    code, out, _ = run(cli_env, "jobs", "--json")
    rows = json_lines(out)
    assert sorted(r["params"]["prompt"] for r in rows) == ["green mug", "red mug"]  # type: ignore[index]
    assert {r["batch_row"] for r in rows} == {2, 4}
    sheet.write_text(sheet.read_text().replace("green mug", "teal mug"))  # an edited row is a new job
    code, _, err = run(cli_env, "batch", str(sheet))
    assert "1 new job(s), 1 already in the ledger" in err


def test_a_jsonl_batch_runs_to_the_end_with_wait(cli_env: dict[str, str], tmp_path: Path, worker_thread: None) -> None:
    lines = [json.dumps({"prompt": f"tile {i}", "seed": i, "steps": 2}) for i in range(5)]
    sheet = tmp_path / "tiles.jsonl"
    sheet.write_text("\n".join([*lines[:2], "{not json", *lines[2:]]) + "\n")
    code, out, err = run(cli_env, "batch", str(sheet), "--wait", "--json")
    assert code == 1 and "line 3: not valid JSON" in err
    jobs = json_lines(out)
    assert len(jobs) == 5 and {j["status"] for j in jobs} == {"succeeded"}
    assert all(len(j["outputs"]) == 1 for j in jobs)  # type: ignore[arg-type]
    _code, _, err = run(cli_env, "batch", str(sheet))
    assert "0 new job(s), 5 already in the ledger (5 finished)" in err


def test_submit_wait_prints_where_the_image_is(cli_env: dict[str, str], worker_thread: None) -> None:
    code, out, _ = run(cli_env, "submit", "a kite", "--seed", "9", "--wait")
    assert code == 0 and "succeeded" in out
    path = next(line.split(": ", 1)[1] for line in out.splitlines() if "output:" in line)
    assert Path(path).read_bytes().startswith(b"\x89PNG")
    code, out, err = run(cli_env, "submit", "a kite", "--seed", "9")
    assert "answered from the result cache" in err
    code, out, _ = run(cli_env, "submit", "a kite", "--seed", "9", "--no-cache", "--wait", "--json")
    (job,) = json_lines(out)
    assert job["status"] == "succeeded" and job["cached_from"] is None


def _atelier(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run `atelier …` as its own process."""
    return subprocess.run([sys.executable, "-m", "atelier.cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_embedded_default_is_shared_by_separate_processes(tmp_path: Path, fake_comfy: FakeComfyUI) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"ATELIER_DATA_DIR": str(tmp_path / "data"), "COMFYUI_URLS": fake_comfy.url, "ATELIER_LEASE_SECONDS": "3"}
    worker = subprocess.Popen([sys.executable, "-m", "atelier.cli.main", "worker"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        submitted = _atelier(env, "submit", "a shared database", "--seed", "5", "--wait", "--json")
        assert submitted.returncode == 0, submitted.stderr
        (job,) = json_lines(submitted.stdout)
        assert job["status"] == "succeeded"
        listed = _atelier(env, "jobs", "--json")
        assert [j["id"] for j in json_lines(listed.stdout)] == [job["id"]]
        status = _atelier(env, "db", "status", "--json")
        assert json.loads(status.stdout)["running"] is True
    finally:
        worker.terminate()
        worker.wait(20)
    assert worker.returncode == 0, worker.stdout.read() if worker.stdout else ""
    stopped = _atelier(env, "db", "status", "--json")
    assert json.loads(stopped.stdout)["running"] is False, "the last user's exit stops the embedded server"
