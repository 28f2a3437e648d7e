"""A server in a child process for a test: started, waited for until it answers, stopped (killed if it lingers)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

__all__ = ["serving"]


@contextmanager
def serving(command: Sequence[str], probe: str, log_path: Path, *, env: Mapping[str, str] | None = None,
            cwd: Path | None = None, ready: int | None = None, timeout: float = 30.0) -> Iterator[None]:
    """Run `command` (its output into `log_path`) until the block ends; enter once GET `probe` answers.

    `ready`: the status the probe must answer (None: any answer). When the process exits early, or does not answer
    within `timeout` seconds, the test fails quoting the end of its log.
    """
    with log_path.open("wb") as log:
        proc = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, env=dict(env) if env else None,
                                cwd=cwd)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"{command[0]} exited ({proc.returncode}): {log_path.read_text()[-2000:]}")
                try:
                    status = httpx.get(probe, timeout=1).status_code
                    if ready is None or status == ready:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"{command[0]} did not answer {probe} in {timeout:g} s: {log_path.read_text()[-2000:]}")
                time.sleep(0.1)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
