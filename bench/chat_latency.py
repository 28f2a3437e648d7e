"""Chat latency: time to first token and request → image shown through Atelier's chat, beside the fakes' own time.

Everything runs on loopback against the fakes (Ollama streams `--chunk-words` words every `--chunk-delay` s;
ComfyUI runs `--step-seconds` per sampling step) and a fresh PostgreSQL database (dropped at the end). For each
metric the floor is what the fake itself takes, measured in the same run with the thinnest client, and three
Atelier paths are timed beside it:
- time to first token: floor = POST /api/chat (stream) to the fake Ollama with httpx, until the first NDJSON line
  with content. A plain question the rules route to "answer", one scripted reply per request.
- request → image shown: floor = `tools.comfyui.direct.run_workflow` straight on the fake ComfyUI with the workflow and
  values the chat's own job used (its steps, size, negative prompt). "draw a …" requests, each a different subject
  so the ledger's result cache never answers; the server's in-process worker (build_server's default) runs them.
- run_turn in this process (no Gradio): until the first Token event / the job's final event.
- /chat as the page does: POST queue/join, then read the session's SSE stream (applying Gradio's diffs), until the
  last assistant message has text / a "Done:" message shows its image, whose bytes are then fetched by URL.
- /chat via gradio_client (`Client.submit(..., api_name="/chat")`), until the same update arrives (with the image
  downloaded). gradio_client's own hand-over (it polls for messages every 50 ms) is part of this figure.
Each request starts a new conversation. Both chat paths fill `/chat`'s inputs as the chat declares them (its
/config and its API page): the message and the workflow by their labels, every other input its default, so an option
the page gains does not break the bench. The chat server (atelier.chat.build_server) runs in a child process (as it
would beside a browser); `--same-process` serves it from a thread of this one instead.
Ratios are Atelier / floor on the medians; no timing is asserted.
Run: .venv/bin/python bench/chat_latency.py [--requests 20] [--warmup 2] [--step-seconds 0.03] [--chunk-delay 0.015]
     [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from atelier.graphs.routing import classify  # noqa: E402
from atelier.tools.schemas import GenerationParams  # noqa: E402
from atelier.tools.settings import Settings, load_settings  # noqa: E402
from bench.smoke import parse_args  # noqa: E402
from tests.chat_server import message_files, message_text  # noqa: E402

QUESTION = "Which colours go well with a sage green kitchen?"
ANSWER = ("Terracotta, cream and warm oak sit well beside sage green; brushed brass handles and a white marble "
          "worktop add contrast without fighting the colour, and dusty pink works for a softer look.")
SUBJECTS = ("paper boat", "red fox", "glass lantern", "copper kettle", "wooden rocking horse", "stone lighthouse",
            "sleeping cat", "tin robot", "hot air balloon", "clay teapot", "brass telescope", "velvet armchair")
PLACES = ("on a pond", "in a snowy forest", "on a windowsill", "beside a canal", "under a night sky",
          "in a wheat field", "on a harbour wall", "in a moss garden")
OWNER = "bench"
SMOKE = {"requests": 1, "warmup": 0, "step_seconds": 0.005, "chunk_delay": 0.002}
MESSAGE_LABEL, WORKFLOW_LABEL = "Message", "Workflow"  # the /chat inputs the bench fills, by their labels


# --- pure helpers ------------------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation between the closest ranks (numpy's default)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Stats:
    """Count, mean, median and 95th percentile of a sample of durations in seconds."""

    n: int
    mean: float
    p50: float
    p95: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        """Summarise durations (seconds)."""
        return cls(len(samples), statistics.fmean(samples), percentile(samples, 50), percentile(samples, 95))


def overhead(atelier: Stats, floor: Stats) -> tuple[float, float]:
    """(Atelier / floor ratio, Atelier − floor in ms), both on the medians."""
    ratio = atelier.p50 / floor.p50 if floor.p50 > 0 else math.inf
    return ratio, (atelier.p50 - floor.p50) * 1000.0


def draw_requests(count: int, start: int = 0) -> list[str]:
    """`count` distinct "draw a …" requests (subject × place, numbered once the pairs run out), from `start`."""
    pairs = [f"{subject} {place}" for subject, place in itertools.product(SUBJECTS, PLACES)]
    subjects = [pairs[i % len(pairs)] + (f" number {i // len(pairs) + 1}" if i >= len(pairs) else "")
                for i in range(start, start + count)]
    return [f"draw a {subject}" for subject in subjects]


def subject_of(request: str) -> str:
    """The subject of a "draw a …" request (what the chat's designer puts in the image prompt: first, or weighted
    first as `(subject:1.2)` for a workflow that takes tags)."""
    return request.removeprefix("draw a ").strip()


def floor_prompt(job_prompt: str, job_subject: str, subject: str) -> str:
    """The chat job's image prompt with its subject replaced by another (same look, style and length class)."""
    if job_subject not in job_prompt:
        raise ValueError(f"the job prompt {job_prompt!r} does not hold its subject {job_subject!r}")
    return job_prompt.replace(job_subject, subject, 1)


def history_of(update: Any) -> list[dict[str, Any]]:
    """The chat history in one streamed `/chat` update: its one list-valued output (the chatbot's messages)."""
    if isinstance(update, list | tuple):
        for output in update:
            if isinstance(output, list):
                return [m for m in output if isinstance(m, dict)]
    return []


def answer_started(update: Any) -> bool:
    """Whether the last message of this update is the assistant's, with some text already."""
    history = history_of(update)
    return bool(history) and history[-1].get("role") == "assistant" and bool(message_text(history[-1]).strip())


def image_shown(update: Any) -> bool:
    """Whether this update shows a finished image: an assistant "Done:" message with its image file."""
    return any(m.get("role") == "assistant" and message_text(m).startswith("Done:") and message_files(m)
               for m in history_of(update))


def done_image_urls(update: Any) -> list[str]:
    """The URLs the page loads the images of this update's "Done:" messages from (Gradio's file parts)."""
    urls = []
    for message in history_of(update):
        content = message.get("content")
        if message.get("role") != "assistant" or not message_text(message).startswith("Done:") or \
                not isinstance(content, list):
            continue
        for part in content:
            file = part.get("file") if isinstance(part, dict) and part.get("type") == "file" else None
            if isinstance(file, dict) and file.get("url"):
                urls.append(str(file["url"]))
    return urls


def apply_update(current: list[Any] | None, output: list[Any]) -> list[Any]:
    """The outputs after one `process_generating` message: the first carries values, the next per-output diffs."""
    from gradio_client.utils import apply_diff

    if current is None:
        return list(output)
    return [apply_diff(value, diff) for value, diff in zip(current, output, strict=True)]


@dataclass(frozen=True)
class Input:
    """One input of the `/chat` event as the chat declares it: its label, and its default value if it has one."""

    label: str | None
    default: Any = None
    has_default: bool = True


def chat_values(inputs: Sequence[Input], given: dict[str, Any]) -> list[Any]:
    """The values of the `/chat` event's inputs in order: `given` by label, every other input its default.

    The bench names only the inputs it sets (the message and the workflow), so an input the chat gains with a
    default (as `send` gained the target seconds) changes nothing here.
    """
    labels = [item.label for item in inputs]
    unknown = sorted(set(given) - set(labels))
    if unknown:
        raise RuntimeError(f"the chat's /chat endpoint has no input labelled {unknown}; its inputs: {labels}")
    values = []
    for item in inputs:
        if item.label in given:
            values.append(given[item.label])
        elif not item.has_default:
            raise RuntimeError(f"the chat's /chat input {item.label!r} has no default and the bench gives none")
        else:
            values.append(item.default)
    return values


def request_values(text: str, workflow: str) -> dict[str, Any]:
    """The inputs the bench sets on `/chat`, by the label the page shows: the message and the workflow option."""
    return {MESSAGE_LABEL: text, WORKFLOW_LABEL: workflow}


Want = Literal["token", "image"]
SEEN: dict[str, Callable[[Any], bool]] = {"token": answer_started, "image": image_shown}


# --- the floors --------------------------------------------------------------------------------------------------


def floor_first_tokens(ollama_url: str, model: str, count: int) -> list[float]:
    """Seconds from POST /api/chat (stream) to the first NDJSON line with content, on the fake Ollama itself."""
    times = []
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "stream": True}
    with httpx.Client(base_url=ollama_url, timeout=60) as http:
        for _ in range(count):
            started = time.perf_counter()
            first: float | None = None
            with http.stream("POST", "/api/chat", json=body) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if first is None and line.strip() and json.loads(line).get("message", {}).get("content"):
                        first = time.perf_counter() - started
            if first is None:
                raise RuntimeError("the fake Ollama streamed no content")
            times.append(first)
    return times


def workflow_steps(settings: Settings, workflow: str, params: GenerationParams) -> int | None:
    """The sampling steps a job of `workflow` with `params` runs (its own value, or the workflow's default)."""
    from atelier.tools.comfyui.direct import resolve_workflow

    if params.steps is not None:
        return params.steps
    template = resolve_workflow(workflow, settings)
    for binding in template.bindings.get("steps", []):
        value = template.graph.get(binding.node_id, {}).get("inputs", {}).get(binding.input)
        if isinstance(value, int):
            return value
    return None


async def floor_images(settings: Settings, workflow: str, params: GenerationParams, prompts: list[str]) -> list[float]:
    """Seconds per image from run_workflow straight on the fake ComfyUI (render, run, save the PNG)."""
    from atelier.tools.comfyui.direct import resolve_workflow, run_workflow

    template = await asyncio.to_thread(resolve_workflow, workflow, settings)
    times: list[float] = []
    for prompt in prompts:
        values = params.model_copy(update={"prompt": prompt, "seed": None})
        started = time.perf_counter()
        result = await run_workflow(values, settings=settings, workflow=template)
        times.append(time.perf_counter() - started)
        if not result.images:
            raise RuntimeError(f"run_workflow made no image for {prompt!r}")
    return times


# --- Atelier in this process: run_turn ---------------------------------------------------------------------------


async def turn_latencies(settings: Settings, conninfo: str, workflow: str | None, questions: int,
                         draws: list[str]) -> tuple[list[float], list[float]]:
    """(first-token seconds, image-done seconds) through `run_turn` here; the server's worker runs the jobs."""
    from atelier.studio import ChatOptions, ChatServices, JobProgress, Token, run_turn

    options = ChatOptions(workflow=workflow)
    firsts: list[float] = []
    images: list[float] = []
    async with ChatServices.open(settings, conninfo=conninfo, with_memory=False) as services:
        for _ in range(questions):
            started = time.perf_counter()
            first: float | None = None
            async for event in run_turn(services, str(uuid.uuid4()), OWNER, message=QUESTION, options=options):
                if first is None and isinstance(event, Token) and event.text.strip():
                    first = time.perf_counter() - started
            if first is None:
                raise RuntimeError("run_turn streamed no token for a plain question")
            firsts.append(first)
        for request in draws:
            started = time.perf_counter()
            done: float | None = None
            async for event in run_turn(services, str(uuid.uuid4()), OWNER, message=request, options=options):
                if isinstance(event, JobProgress) and event.event.job is not None:
                    if event.event.job.status != "succeeded":
                        raise RuntimeError(f"{request!r}: job {event.event.job.status}: {event.event.job.error}")
                    done = time.perf_counter() - started
            if done is None:
                raise RuntimeError(f"run_turn queued no image for {request!r}")
            images.append(done)
    return firsts, images


# --- Atelier through the chat: the Gradio /chat endpoint --------------------------------------------------------


def _stream(job: Any, started: float, timeout: float) -> Iterator[tuple[float, Any]]:
    """Each streamed update of a gradio_client job as it arrives, with its seconds since `started`."""
    seen = 0
    while True:
        done = job.done()
        outputs = job.outputs()
        while seen < len(outputs):
            yield time.perf_counter() - started, outputs[seen]
            seen += 1
        if done:
            job.result()  # raises what the endpoint raised
            return
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"no end to the /chat call after {timeout:g} s")
        time.sleep(0.001)


@dataclass(frozen=True)
class ClientWire:
    """The `/chat` endpoint through gradio_client, with the inputs its API page declares (view_api)."""

    client: Any
    inputs: tuple[Input, ...]

    @classmethod
    def discover(cls, client: Any) -> ClientWire:
        """Read `/chat`'s parameters (label, default) from the client's view of the API."""
        api = client.view_api(return_format="dict", print_info=False)
        parameters = api["named_endpoints"]["/chat"]["parameters"]
        return cls(client, tuple(Input(p.get("label"), p.get("parameter_default"), bool(p.get("parameter_has_default")))
                                 for p in parameters))

    def call(self, text: str, workflow: str, want: Want, timeout: float) -> float:
        """Seconds from gradio_client's submit of `text` to `/chat` (a new conversation) to the update showing `want`.

        gradio_client hands the updates over through its own threads (it looks for new messages every 50 ms when
        none is waiting), so this includes the client library's delays as well as the server's.
        """
        self.client.predict(api_name="/new_conversation")
        values = chat_values(self.inputs, request_values(text, workflow))
        started = time.perf_counter()
        job = self.client.submit(*values, api_name="/chat")
        found: float | None = None
        last: Any = None
        for elapsed, update in _stream(job, started, timeout):
            last = update
            if found is None and SEEN[want](update):
                found = elapsed
        if found is None:
            raise RuntimeError(f"/chat never showed the {want} for {text!r}; last history: {history_of(last)}")
        return found


@dataclass(frozen=True)
class PageWire:
    """The `/chat` event as the page's JavaScript sends it: POST queue/join, then the session's SSE stream."""

    base: str
    fn_index: int
    inputs: tuple[Input, ...]

    @classmethod
    def discover(cls, url: str) -> PageWire:
        """The API root, the event index of `/chat` and its inputs (label, initial value), from the page's /config."""
        config = httpx.get(url + "config", timeout=30).json()
        event = next(d for d in config["dependencies"] if d.get("api_name") == "chat")
        props = {c["id"]: c.get("props", {}) for c in config["components"]}
        inputs = tuple(Input(props[i].get("label"), props[i].get("value")) for i in event["inputs"])
        return cls(url + str(config.get("api_prefix", "/gradio_api")).strip("/") + "/", int(event["id"]), inputs)

    def call(self, http: httpx.Client, text: str, workflow: str, want: Want, timeout: float) -> float:
        """Seconds from joining the queue with `text` (a new session: a new conversation) to `want` shown.

        An image counts as shown once its bytes are fetched from the URL the update gives, as a browser would.
        """
        session = uuid.uuid4().hex
        started = time.perf_counter()
        joined = http.post(self.base + "queue/join", json={
            "data": chat_values(self.inputs, request_values(text, workflow)), "fn_index": self.fn_index,
            "session_hash": session, "event_data": None, "trigger_id": None})
        joined.raise_for_status()
        outputs: list[Any] | None = None
        found: float | None = None
        with http.stream("GET", self.base + "queue/data", params={"session_hash": session},
                         timeout=timeout) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line.removeprefix("data:"))
                kind = message.get("msg")
                if kind == "close_stream":
                    break
                if kind == "unexpected_error" or (kind == "process_completed" and not message.get("success")):
                    raise RuntimeError(f"/chat failed for {text!r}: {message}")
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"no end to the /chat call after {timeout:g} s")
                if kind != "process_generating" or found is not None:
                    continue
                outputs = apply_update(outputs, message["output"]["data"])
                if SEEN[want](outputs):
                    for image in done_image_urls(outputs) if want == "image" else []:
                        http.get(image).raise_for_status()
                    found = time.perf_counter() - started
        if found is None:
            raise RuntimeError(f"/chat never showed the {want} for {text!r}; last history: {history_of(outputs)}")
        return found


@contextlib.contextmanager
def chat_server(tmp: Path, comfy_url: str, ollama_url: str, conninfo: str, *, same_process: bool) -> Iterator[str]:
    """Serve atelier.chat.build_server (with its worker) on a loopback port; yield its URL.

    While a child process starts the server, this one imports what run_turn needs (the two overlap on two cores).
    """
    if same_process:
        from tests.chat_server import ServerThread, chat_settings

        with ServerThread(chat_settings(tmp, comfy_url, ollama_url, conninfo), conninfo) as url:
            yield url
        return
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "server.log"
    with log.open("w") as errors:
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(tmp), comfy_url,
                                  ollama_url, conninfo], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=errors, text=True, env=os.environ | {"TQDM_DISABLE": "1"})
    try:
        importlib.import_module("atelier.studio")
        assert child.stdout is not None
        url = ""
        for line in child.stdout:  # the child prints its URL once serving (anything before it is skipped)
            if line.startswith("http"):
                url = line.strip()
                break
        if not url:
            raise RuntimeError(f"the chat server did not start (exit code {child.wait(30)})")
        yield url
    finally:
        if child.stdin is not None:
            child.stdin.close()  # the child stops its server when its stdin closes
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        during, shutdown = split_server_log(log.read_text(errors="replace"))
        if during:
            print(f"--- the chat server's log during the run ---\n{during}--- end of the server's log ---",
                  file=sys.stderr)
        if shutdown:
            print("(at shutdown the server cancelled a stream gradio_client still held open: "
                  f"{shutdown})", file=sys.stderr)


def split_server_log(text: str) -> tuple[str, str]:
    """(what the server logged while serving, a one-line gist of uvicorn's forced-shutdown report or "")."""
    marker = text.find("timeout graceful shutdown exceeded")
    if marker < 0:
        return text, ""
    start = text.rfind("\n", 0, marker) + 1
    return text[:start], text[start:].splitlines()[0].strip()


def serve(tmp: str, comfy_url: str, ollama_url: str, conninfo: str) -> None:
    """Child mode: serve the chat (atelier.chat.build_server), print its URL, stop when stdin closes."""
    from tests.chat_server import ServerThread, chat_settings

    with ServerThread(chat_settings(Path(tmp), comfy_url, ollama_url, conninfo), conninfo) as url:
        print(url, flush=True)
        sys.stdin.read()


async def ledger_tally(conninfo: str) -> dict[str, int]:
    """Jobs per status in the ledger, plus how many the result cache answered ("cached")."""
    from atelier.tools.ledger.store import JobLedger

    tally: dict[str, int] = {}
    async with JobLedger.open(conninfo) as ledger:
        for job in await ledger.list_jobs(limit=10_000):
            tally[job.status] = tally.get(job.status, 0) + 1
            tally["cached"] = tally.get("cached", 0) + (job.cached_from is not None)
    return tally


async def chat_job(conninfo: str, subject: str) -> tuple[str, GenerationParams]:
    """The workflow and values of the chat's newest job for `subject` (read from the ledger)."""
    from atelier.tools.ledger.store import JobLedger

    async with JobLedger.open(conninfo) as ledger:
        for job in await ledger.list_jobs(limit=20):
            if subject in str(job.params.get("prompt", "")):
                return job.workflow, job.generation
    raise RuntimeError(f"no job in the ledger for {subject!r}")


# --- the run -----------------------------------------------------------------------------------------------------

PATHS: dict[str, str] = {
    "turn": "run_turn in this process",
    "page": "chat: /chat as the page does",
    "client": "chat: /chat via gradio_client",
}
FLOORS = {"token": "floor: fake Ollama via httpx", "image": "floor: run_workflow direct"}


@dataclass
class Results:
    """Samples (seconds) per metric ("token", "image") and path (PATHS), and what the image jobs were."""

    samples: dict[str, dict[str, list[float]]]
    workflow: str
    params: GenerationParams
    steps: int | None
    ledger: dict[str, int]


def measure(args: argparse.Namespace, tmp: Path, conninfo: str, console: Console) -> Results:
    """Start the fakes and the chat server, warm every path up, then time `args.requests` requests per path."""
    from gradio_client import Client

    from tests.conftest import INSTALLED_MODELS
    from tests.fakes.comfyui_server import FakeComfyUI
    from tests.fakes.ollama_server import FakeOllama

    n, warm, timeout = args.requests, args.warmup, args.timeout
    per_path = n + warm
    draws = draw_requests(4 * per_path + 1)
    if classify(QUESTION) != "answer" or any(classify(d) != "generate" for d in draws):
        raise SystemExit("the routing rules no longer class the bench's requests as answer / generate")
    first_draw, rest = draws[0], draws[1:]
    floor_draws, turn_draws, page_draws, client_draws = (rest[i * per_path:(i + 1) * per_path] for i in range(4))
    workflow = args.workflow or ""
    samples: dict[str, dict[str, list[float]]] = {"token": {}, "image": {}}
    with FakeComfyUI(step_seconds=args.step_seconds, models=INSTALLED_MODELS, output_dir=tmp / "comfyui") as comfy, \
            FakeOllama(chunk_delay=args.chunk_delay, chunk_words=args.chunk_words) as ollama:
        here = load_settings(data_dir=tmp / "bench", comfyui_urls=comfy.url, ollama_url=ollama.url,
                             database_url=conninfo, approval_cost=0.02, approval_gpu_seconds=60)
        model = here.chat_model
        ollama.script(model, [ANSWER] * (4 * per_path + 1))  # one reply per question, whichever path asks
        with chat_server(tmp / "server", comfy.url, ollama.url, conninfo, same_process=args.same_process) as url, \
                httpx.Client(timeout=timeout) as http:
            console.print(f"chat server at {url} ({'this process' if args.same_process else 'a child process'})")
            client = Client(url, verbose=False, download_files=str(tmp / "downloads"))
            wire, page = ClientWire.discover(client), PageWire.discover(url)
            console.print("warming up the chat …")
            wire.call(QUESTION, workflow, "token", timeout)
            wire.call(first_draw, workflow, "image", timeout)
            used_workflow, params = asyncio.run(chat_job(conninfo, subject_of(first_draw)))
            prompts = [floor_prompt(params.prompt, subject_of(first_draw), subject_of(d)) for d in floor_draws]

            console.print(f"time to first token: {per_path} requests per path ({warm} of them warm-up) …")
            token = samples["token"]
            token["floor"] = floor_first_tokens(ollama.url, model, per_path)
            token["turn"], _ = asyncio.run(turn_latencies(here, conninfo, workflow or None, per_path, []))
            token["page"] = [page.call(http, QUESTION, workflow, "token", timeout) for _ in range(per_path)]
            token["client"] = [wire.call(QUESTION, workflow, "token", timeout) for _ in range(per_path)]

            console.print(f"request → image shown: {per_path} requests per path ({warm} of them warm-up) …")
            image = samples["image"]
            image["floor"] = asyncio.run(floor_images(here, used_workflow, params, prompts))
            _, image["turn"] = asyncio.run(turn_latencies(here, conninfo, workflow or None, 0, turn_draws))
            image["page"] = [page.call(http, d, workflow, "image", timeout) for d in page_draws]
            image["client"] = [wire.call(d, workflow, "image", timeout) for d in client_draws]
            client.close()
            tally = asyncio.run(ledger_tally(conninfo))
    timed = {metric: {path: values[warm:] for path, values in paths.items()} for metric, paths in samples.items()}
    return Results(timed, used_workflow, params, workflow_steps(here, used_workflow, params), tally)


def summary_line(name: str, floor: Stats, client: Stats, page: Stats) -> str:
    """One line per metric (medians): the chat via gradio_client and as the page does, against the floor."""
    ratio, extra = overhead(client, floor)
    page_ratio, page_extra = overhead(page, floor)
    return (f"{name}: floor {floor.p50 * 1000:.1f} ms; chat via gradio_client {client.p50 * 1000:.1f} ms, overhead "
            f"{ratio:.2f}x ({extra:+.1f} ms); as the page does {page.p50 * 1000:.1f} ms, {page_ratio:.2f}x "
            f"({page_extra:+.1f} ms)")


def report(results: Results, args: argparse.Namespace, console: Console) -> None:
    """Print the table (ms) and one summary line per metric."""
    table = Table(title=f"Chat latency against the fakes ({args.requests} timed requests per path, after "
                        f"{args.warmup} warm-up)")
    for column in ("metric", "path", "n", "mean ms", "p50 ms", "p95 ms", "× floor (p50)", "+ms (p50)", "+ms (p95)"):
        table.add_column(column, justify="left" if column in {"metric", "path"} else "right")
    names = {"token": "first token", "image": "image shown"}
    stats = {metric: {path: Stats.of(values) for path, values in paths.items()}
             for metric, paths in results.samples.items()}
    for metric, paths in stats.items():
        floor = paths["floor"]
        for path, stat in paths.items():
            ratio, extra = overhead(stat, floor)
            label = FLOORS[metric] if path == "floor" else PATHS[path]
            table.add_row(names[metric], label, str(stat.n), f"{stat.mean * 1000:.1f}", f"{stat.p50 * 1000:.1f}",
                          f"{stat.p95 * 1000:.1f}", f"{ratio:.2f}x", f"{extra:+.1f}",
                          f"{(stat.p95 - floor.p95) * 1000:+.1f}")
        table.add_section()
    console.print(table)
    values = results.params
    console.print(f"fakes: Ollama {args.chunk_words} word(s) every {args.chunk_delay * 1000:g} ms; ComfyUI "
                  f"{args.step_seconds * 1000:g} ms per step; the chat's job (and the floor's): {results.workflow}, "
                  f"{results.steps or '?'} steps, {values.width or '?'}x{values.height or '?'}")
    jobs = ", ".join(f"{count} {status}" for status, count in sorted(results.ledger.items()) if status != "cached")
    console.print(f"ledger: {jobs}; {results.ledger.get('cached', 0)} answered from the result cache")
    for metric, name in (("token", "first token p50"), ("image", "image shown p50")):
        paths = stats[metric]
        console.print(summary_line(name, paths["floor"], paths["client"], paths["page"]))


def main() -> None:
    """Parse options, run the bench on a fresh database (or --database-url) and print the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20, help="timed requests per path and metric")
    parser.add_argument("--warmup", type=int, default=2, help="untimed requests per path first")
    parser.add_argument("--step-seconds", type=float, default=0.03, help="fake ComfyUI seconds per sampling step")
    parser.add_argument("--chunk-delay", type=float, default=0.015, help="fake Ollama seconds between streamed lines")
    parser.add_argument("--chunk-words", type=int, default=1, help="fake Ollama words per streamed line")
    parser.add_argument("--workflow", default="txt2img", help="the chat's workflow option ('' = automatic)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one chat request may take")
    parser.add_argument("--database-url", help="use this database instead of a fresh one on 127.0.0.1:5432")
    parser.add_argument("--same-process", action="store_true", help="serve the chat from a thread of this process")
    parser.add_argument("--json", type=Path, help="also write every sample (seconds) to this JSON file")
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parse_args(parser, SMOKE)
    if args.serve:
        serve(*args.serve)
        return
    if args.requests < 1 or args.warmup < 0:
        parser.error("--requests must be at least 1 and --warmup at least 0")
    from tests.pg import MACHINE_ADMIN_URL, fresh_database

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)  # a log or a pipe: keep each table row and summary on one line
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="atelier-bench-") as folder:
        database = (contextlib.nullcontext(args.database_url) if args.database_url
                    else fresh_database(MACHINE_ADMIN_URL, "atelier_bench"))
        with database as conninfo:
            results = measure(args, Path(folder), conninfo, console)
    report(results, args, console)
    if args.json:
        options = {k: v for k, v in vars(args).items() if k not in {"json", "serve"}}
        args.json.write_text(json.dumps({"options": options, "seconds": results.samples}, indent=1))
        console.print(f"samples written to {args.json}")
    console.print(f"total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
