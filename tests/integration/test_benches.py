"""Every script in bench/ runs its `--smoke` size and prints its figures: ratios against a baseline of the same run.

Each bench runs as a person runs it (`python bench/NAME.py --smoke`) on the machine's PostgreSQL and the loopback
fakes. Nothing here times anything: a test asserts only that the bench finished and printed each figure it owes,
as a number. A comparison whose package (the bench extra) is not installed must be named as skipped instead.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"(\d+(?:\.\d+)?|inf)"


@dataclass(frozen=True)
class Figures:
    """What one bench's smoke run must print: lines (regexes, each number a group), some only with a package."""

    always: tuple[str, ...]
    package: str | None = None  # the module an optional comparison imports
    comparison: tuple[str, ...] = field(default_factory=tuple)  # printed when `package` is installed
    own_side: tuple[str, ...] = field(default_factory=tuple)  # printed when it is not


FIGURES: dict[str, Figures] = {
    "chat_latency": Figures((
        rf"^first token p50: floor {NUMBER} ms; chat via gradio_client {NUMBER} ms, overhead {NUMBER}x "
        rf"\([+-]{NUMBER} ms\); as the page does {NUMBER} ms, {NUMBER}x",
        rf"^image shown p50: floor {NUMBER} ms; chat via gradio_client {NUMBER} ms, overhead {NUMBER}x "
        rf"\([+-]{NUMBER} ms\); as the page does {NUMBER} ms, {NUMBER}x",
    )),
    "comfy_overhead": Figures((
        rf"^atelier client  overhead: median +{NUMBER} ms",
        rf"^polling baseline overhead: median +{NUMBER} ms",
        rf"^ratio baseline/atelier: {NUMBER}x",
    )),
    "gpu_idle": Figures((
        rf"^atelier worker +: \d+ jobs, GPU idle +{NUMBER}% between jobs",
        rf"^§6 polling worker: \d+ jobs, GPU idle +{NUMBER}% between jobs",
        rf"^idle ratio +: {NUMBER}x less idle time",
    )),
    "ledger_throughput": Figures(
        (rf"^round 1 one by one: atelier +{NUMBER} jobs/s \(submit CPU +{NUMBER} us/job\)",
         rf"^round 2 batched +: .*atelier +{NUMBER} jobs/s",
         rf"^atelier, one submit per job +: +{NUMBER} jobs/s", rf"^ratio batched / one by one +: +{NUMBER}x"),
        package="procrastinate",
        comparison=(rf"^round 2 one by one: procrastinate +{NUMBER} jobs/s .*, atelier +{NUMBER} jobs/s .*, "
                    rf"ratio {NUMBER}x",
                    rf"^ratio vs procrastinate +: +{NUMBER}x one by one, {NUMBER}x batched \(median of the rounds'",),
        own_side=(r"^skipped: the comparison with procrastinate: procrastinate is not installed "
                  r"\(pip install -e '\.\[bench\]' adds it\)",),
    ),
    "load": Figures((
        *(rf"^{figure} p{q} \(ms\) +{NUMBER} +{NUMBER} +{NUMBER}x$"
          for figure in ("submit", "first event", "chat first token", "scrape /metrics") for q in (50, 95, 99)),
        rf"^peak PostgreSQL connections +\d+ +\d+ +{NUMBER}x$",
        rf"^api RSS peak \(MB\) +{NUMBER} +{NUMBER} +{NUMBER}x$",
        r"^events lost \(must be 0\) +0 +0 +–$",
        r"^errors +0 +0 +–$",
    )),
    "llm_calls": Figures(
        (rf"^illustrate: \d+ of \d+ pictures described by the answer's own call \({NUMBER} calls per illustrated "
         r"answer\)",),
        package="langgraph_supervisor",
        comparison=(*(rf"^{category} +\d+ +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}x" for category in
                      ("plain question", "illustrate", "retrieve", "showcase")),
                    rf"^all +\d+ +{NUMBER} +{NUMBER} +{NUMBER}x fewer calls"),
        own_side=(r"^skipped: the comparison with langgraph-supervisor's create_supervisor: langgraph-supervisor is "
                  r"not installed",
                  *(rf"^{category} +\d+ +{NUMBER} +{NUMBER}$" for category in
                    ("plain question", "illustrate", "retrieve", "showcase"))),
    ),
    "memory_search": Figures((
        rf"^MiniLM on CPU: {NUMBER} prompts/s embedded",
        rf"^\| exact numpy scan \(owner filter\) \| [\d,]+ \| – \| – \| – \| {NUMBER} / {NUMBER} \|",
        rf"^\| pgvector [^|]+ \| [\d,]+ \| {NUMBER} \| {NUMBER} \| {NUMBER} / {NUMBER} \| {NUMBER} / {NUMBER} \| "
        rf"{NUMBER} / {NUMBER} \| {NUMBER} \(min {NUMBER}\) \| {NUMBER}× \|",
        rf"^\| Qdrant API: qdrant-client local mode [^|]+ \| [\d,]+ \| {NUMBER} \| – \| {NUMBER} / {NUMBER} \| "
        rf"{NUMBER} / {NUMBER} \| {NUMBER} / {NUMBER} \| {NUMBER} \(min {NUMBER}\) \| {NUMBER}× \|",
    )),
    "quota_overhead": Figures((
        rf"^ratio to the baseline: {NUMBER}x with accounts and quotas \(8 users\), {NUMBER}x with every submit "
        r"as one user",
    )),
    "routing": Figures((
        rf"^all +\d+ +{NUMBER} +{NUMBER} +{NUMBER}$",
        rf"^LLM calls per request: rules alone {NUMBER}, rules \+ LLM {NUMBER}, LLM only {NUMBER}$",
        rf"^rules alone: {NUMBER} right, {NUMBER} wrong, {NUMBER} unsure",
    )),
}


def bench_names() -> set[str]:
    """The runnable scripts in bench/ (every module but the package and the shared --smoke option)."""
    return {p.stem for p in (ROOT / "bench").glob("*.py")} - {"__init__", "smoke"}


def installed(module: str) -> bool:
    """Whether `module` imports in this interpreter (the one the benches run with)."""
    return importlib.util.find_spec(module) is not None


def expected_lines(figures: Figures) -> tuple[str, ...]:
    """The lines this run must print: the bench's own, and the comparison or the note that it was skipped."""
    if figures.package is None:
        return figures.always
    return figures.always + (figures.comparison if installed(figures.package) else figures.own_side)


def run_smoke(name: str, *extra: str) -> str:
    """Run `python bench/NAME.py --smoke` from the repository; return what it printed (fail with its output)."""
    run = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), "--smoke", *extra], cwd=ROOT,
                         capture_output=True, text=True, timeout=110,
                         env=os.environ | {"TQDM_DISABLE": "1", "NO_COLOR": "1"}, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, f"bench/{name}.py --smoke exited {run.returncode}:\n{run.stdout}\n{run.stderr[-4000:]}"
    return run.stdout


def test_every_bench_says_what_its_smoke_run_prints() -> None:
    assert bench_names() == set(FIGURES), "a new bench needs its figures listed here (and a --smoke size)"


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_the_smoke_size_runs_and_prints_its_figures(name: str, request: pytest.FixtureRequest) -> None:
    # chat_latency takes one database (the fixture's); the others make and drop theirs on the same machine server
    extra = ("--database-url", request.getfixturevalue("machine_pg_url")) if name == "chat_latency" else ()
    output = run_smoke(name, *extra)
    assert output.startswith("smoke run ("), output[:500]
    for pattern in expected_lines(FIGURES[name]):
        found = re.search(pattern, output, re.MULTILINE)
        assert found is not None, f"bench/{name}.py --smoke printed no line like {pattern!r}:\n{output}"
        for number in found.groups():
            value = float(number)
            assert value >= 0 and not math.isnan(value), f"{name}: {found.group(0)!r}"
