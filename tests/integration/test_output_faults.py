"""Outputs under faults: an unreachable S3 (moto on loopback, not started yet) and a full disk while storing.

Either way the job is retried, not failed: it ends succeeded with its images stored once (ComfyUI ran its prompt
once), and while it waited its error said which store (the endpoint and bucket, or the folder) and why.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from atelier.tools.ledger.models import Job, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs import store as store_module
from atelier.tools.outputs.store import LocalOutputStore, OutputStore, S3OutputStore
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings
from atelier.tools.worker.worker import Worker, WorkerOptions
from tests.chat_server import free_port
from tests.fakes.comfyui_server import FakeComfyUI

pytestmark = pytest.mark.asyncio

ACCESS, SECRET = "AKIAMOTOTESTING", "moto-testing-secret"
JOBS = 3


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials and no AWS configuration of the machine's (moto is the only S3 here)."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


async def _run_until_done(svc: LedgerService, settings: Settings, store: OutputStore, jobs: list[Job],
                          while_failing: Any) -> tuple[list[Job], list[str]]:
    """Run a worker until every job ends; meanwhile collect the jobs' recorded errors and call `while_failing()`
    once the first error was recorded (it ends the fault). Returns the ended jobs and the errors seen."""
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(svc.ledger, settings, store, WorkerOptions(lease_seconds=5)).run(stop))
    errors: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not errors:
            errors = [job.error for job in [await svc.get(j.id) for j in jobs] if job.error]
            assert time.monotonic() < deadline, "no job recorded a storing error"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(while_failing)
        ended = await svc.wait([job.id for job in jobs], timeout=45)
    finally:
        stop.set()
        await worker
    return ended, errors


async def _submit(svc: LedgerService, tag: str) -> list[Job]:
    """JOBS distinct jobs."""
    return [(await svc.submit(JobRequest(params=GenerationParams(prompt=f"{tag} {n}", seed=n, steps=2),
                                         use_cache=False))).job for n in range(JOBS)]


def _ran_once_each(fake: FakeComfyUI, ended: list[Job]) -> None:
    """Every job succeeded with one image, and ComfyUI ran each job's prompt exactly once (no job doubled)."""
    assert [job.status for job in ended] == ["succeeded"] * JOBS, [(job.status, job.error) for job in ended]
    assert all(len(job.outputs) == 1 and job.error is None for job in ended)
    counts = fake.execution_counts
    assert [counts[job.prompt_id] for job in ended] == [1] * JOBS, counts


async def test_an_unreachable_s3_delays_jobs_without_losing_or_doubling_them(
    aws_env: None, machine_pg_url: str, tmp_path: Path, fake_comfy: FakeComfyUI
) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    settings = load_settings(data_dir=tmp_path / "d", comfyui_urls=fake_comfy.url, lease_seconds=5)
    store = S3OutputStore("faults", endpoint_url=endpoint, access_key=ACCESS, secret_key=SECRET)
    servers: list[ThreadedMotoServer] = []

    def s3_comes_up() -> None:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        servers.append(server)

    try:
        async with LedgerService.open(settings, conninfo=machine_pg_url, store=store) as svc:
            ended, errors = await _run_until_done(svc, settings, store, await _submit(svc, "s3 fault"), s3_comes_up)
        stored = [store.read(job.outputs[0].uri) for job in ended if job.outputs]  # each image is in the bucket
    finally:
        for server in servers:
            server.stop()
    _ran_once_each(fake_comfy, ended)
    assert all(endpoint in error and "unreachable" in error and "ATELIER_S3_ENDPOINT_URL" in error
               for error in errors), errors
    assert len(stored) == JOBS and all(data.startswith(b"\x89PNG") for data in stored)


class _FullDisk:
    """The `os` module as the output store sees it, with the disk full for the first `writes` files it writes."""

    def __init__(self, writes: int) -> None:
        self.left = writes

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdopen(self, fd: int, mode: str = "r") -> Any:
        """The real file, whose writes fail with ENOSPC while the disk is full."""
        handle = os.fdopen(fd, mode)
        if self.left <= 0:
            return handle
        self.left -= 1

        def full(_: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.write = full  # type: ignore[method-assign,assignment]
        return handle


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FullDisk]:
    """The output store's disk full for its next two writes (only the store's own `os` is swapped)."""
    disk = _FullDisk(writes=2)
    monkeypatch.setattr(store_module, "os", disk)
    yield disk


async def test_a_full_disk_while_storing_retries_the_job_and_names_the_folder(
    full_disk: _FullDisk, machine_pg_url: str, tmp_path: Path, fake_comfy: FakeComfyUI
) -> None:
    folder = tmp_path / "outputs"
    settings = load_settings(data_dir=tmp_path / "d", comfyui_urls=fake_comfy.url, lease_seconds=5)
    store = LocalOutputStore(folder)
    async with LedgerService.open(settings, conninfo=machine_pg_url, store=store) as svc:
        ended, errors = await _run_until_done(svc, settings, store, await _submit(svc, "disk fault"),
                                              lambda: None)
    _ran_once_each(fake_comfy, ended)
    assert full_disk.left == 0  # both full-disk writes happened, and the jobs still succeeded
    assert all(str(folder.resolve()) in error and "full" in error and "ATELIER_OUTPUT_DIR" in error
               for error in errors), errors
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    assert len(files) == JOBS and not any(path.name.endswith(".tmp") for path in files)  # no half-written leftovers
    assert {Path(job.outputs[0].uri.removeprefix("file://")) for job in ended} == set(files)
