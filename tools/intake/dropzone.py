"""Drop zone: files dropped in `DIR/inbox/<workflow>/` become ledger jobs, exactly once, whatever crashes.

Layout under the drop-zone folder `DIR` (every `<workflow>` level is the workflow's name):

- `inbox/<workflow>/`: people drop files here (text prompts, or images for workflows that take one);
- `processing/<workflow>/`: a file moved here (one atomic rename) is taken; it stays until its job ends;
- `done/<workflow>/`, `failed/<workflow>/`: where it ends (a failed file gets `<name>.error.txt` beside it);
- `outputs/<workflow>/`: the job's images, named `<input stem>-<index><ext>`;
- input images are checked and kept in Atelier's inputs store (tools/inputs.py) under their content hash, the
  name the job's `input_image` gives (a worker that runs the job later, or again after a crash, still finds it).

Captions (tools/vision.py): with a vision model set (ATELIER_VISION_MODEL), a dropped image is described by it and
the description leads its job's prompt — `<caption>, <sidecar prompt or the default instruction>` — so the picture
is repainted from what it shows. The caption (or why there is none) is kept with the job (a `caption` event, as
the memory's indexer keeps those of generated images) and in the file's Outcome. Without a vision model, a dropped
image becomes the same job as before and the Outcome and the log say captioning was skipped and why; a vision call
that fails (the model missing, Ollama down or slow) never fails the file: its job is made without a caption, and
after Ollama was down or slow the next images are not sent for `caption_pause_seconds`. Workflows with no prompt
(an upscaler) and edit workflows (whose model reads the image itself, and whose prompt is an instruction) are not
captioned.

What is read: only regular files that are not links (a link in the inbox, or a sidecar that is a link, is
never followed), and at most MAX_PROMPT_BYTES of a prompt or ATELIER_MAX_UPLOAD_BYTES of an image.

Taking a file: it must be complete. Its size and mtime must be equal across two looks at least
`stable_seconds` apart, no process may hold it open for writing (a Linux read lease is refused while a
writer has it open), and an image must end as its format says (PNG IEND chunk, JPEG EOI marker, WEBP RIFF
length). Only then is it renamed into `processing/`.

Exactly once: each file's job has the idempotency key `drop:<workflow>:<sha256 of the file>`, and a
file leaves `processing/` only after its job finished and its outputs were copied. A watcher killed at
any moment restarts by re-scanning `processing/` first (files taken before the crash), then `inbox/`;
submitting again with the same key returns the job already recorded, so no file makes a second job.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atelier.tools.catalog import list_templates
from atelier.tools.errors import AtelierError
from atelier.tools.inputs import InputStore
from atelier.tools.ledger.indexing import CAPTION_EVENT
from atelier.tools.ledger.models import Job, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.schemas import GenerationParams
from atelier.tools.vision import (
    DEFAULT_TIMEOUT_SECONDS,
    CaptionAttempt,
    caption_or_skip,
    prompt_with_caption,
    why_not_captioned,
)

__all__ = [
    "DEFAULT_PROMPT",
    "IMAGE_SUFFIXES",
    "TEXT_SUFFIXES",
    "DropZone",
    "DropZoneOptions",
    "FileState",
    "Outcome",
    "describe",
    "idempotency_key",
    "image_complete",
    "open_for_writing",
]

log = logging.getLogger("atelier.dropzone")

TEXT_SUFFIXES: frozenset[str] = frozenset({".txt", ".md"})
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp"})
IGNORED_SUFFIXES: frozenset[str] = frozenset({".part", ".tmp", ".crdownload", ".partial", ".swp"})
DEFAULT_PROMPT = "a faithful, detailed rendition of the input image"
FOLDERS = ("inbox", "processing", "done", "failed", "outputs")
# A prompt file longer than this is not a prompt.
MAX_PROMPT_BYTES = 64 * 1024


def idempotency_key(workflow: str, sha256: str) -> str:
    """The ledger key of a dropped file: its workflow and content hash."""
    return f"drop:{workflow}:{sha256}"


def open_for_writing(path: Path) -> bool:
    """Whether some process holds `path` open for writing (Linux read lease; False when it cannot tell)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the stat check alone decides
        return False
    setlease: int | None = getattr(fcntl, "F_SETLEASE", None)
    if setlease is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, setlease, fcntl.F_RDLCK)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EBUSY)  # EACCES/EINVAL: not our file, or no leases here
    else:
        fcntl.fcntl(fd, setlease, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def image_complete(path: Path) -> bool | None:
    """True when the image ends as its format says, False when it looks cut short, None when not an image."""
    with path.open("rb") as handle:
        head = handle.read(16)
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - 64))
        tail = handle.read()
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return tail.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82")
    if head.startswith(b"\xff\xd8"):
        return b"\xff\xd9" in tail[-32:]
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return int.from_bytes(head[4:8], "little") + 8 <= size
    return None


@dataclass
class DropZoneOptions:
    """How the drop zone behaves."""

    owner: str = "dropzone"
    stable_seconds: float = 0.5
    rescan_seconds: float = 2.0
    truncated_grace_seconds: float = 60.0
    default_prompt: str = DEFAULT_PROMPT
    priority: int = 0
    caption_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    caption_pause_seconds: float = 30.0


@dataclass
class FileState:
    """The last look at one inbox file: its size and mtime, and since when they held."""

    size: int
    mtime_ns: int
    since: float


@dataclass
class Outcome:
    """How one dropped file ended: done or failed, where it went, and its outputs."""

    workflow: str
    name: str
    ok: bool
    path: Path
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    job_id: uuid.UUID | None = None
    caption: str | None = None
    caption_skipped: str | None = None


@dataclass
class _Taken:
    """A file in processing/ with its job, and an image's caption (or why it has none)."""

    workflow: str
    path: Path
    sidecar: Path | None
    job_id: uuid.UUID | None = None
    caption: CaptionAttempt | None = None


class DropZone:
    """Watch `root` and turn dropped files into jobs; call `scan()` often and `run()` to do it forever."""

    def __init__(self, root: Path, svc: LedgerService, options: DropZoneOptions | None = None,
                 on_outcome: Callable[[Outcome], None] | None = None) -> None:
        self.root = root.expanduser().resolve()
        self.svc = svc
        self.options = options or DropZoneOptions()
        self.on_outcome = on_outcome
        self.takes_image: dict[str, bool] = {}
        self.binds_seed: set[str] = set()
        self.uncaptioned: dict[str, str] = {}  # image workflow → why its images are not captioned
        self._vision_paused_until = -float("inf")
        self._vision_reason = ""
        self._seen: dict[Path, FileState] = {}
        self._taken: dict[Path, _Taken] = {}
        self._lock = asyncio.Lock()
        self.done = 0
        self.failed = 0

    # --- layout ------------------------------------------------------------------------------------------

    def folder(self, kind: str, workflow: str | None = None) -> Path:
        """`root/kind` or `root/kind/workflow`."""
        base = self.root / kind
        return base / workflow if workflow else base

    def prepare(self) -> list[str]:
        """Create the folders, one inbox per workflow; return the workflow names (broken ones are skipped)."""
        settings = self.svc.settings
        listing = list_templates(settings.workflow_dirs)
        for message in listing.errors:
            log.warning("workflow skipped: %s", message)
        self.takes_image = {t.name: "input_image" in t.bindings for t in listing.templates}
        self.binds_seed = {t.name for t in listing.templates if "seed" in t.bindings}
        self.uncaptioned = {t.name: reason for t in listing.templates if (reason := why_not_captioned(t))}
        for kind in FOLDERS:
            self.folder(kind).mkdir(parents=True, exist_ok=True)
        for name in self.takes_image:
            self.folder("inbox", name).mkdir(exist_ok=True)
        for kind in ("outputs", "failed"):  # half-written copies a crash left behind
            for leftover in self.folder(kind).rglob(".*.tmp"):
                leftover.unlink(missing_ok=True)
        return list(self.takes_image)

    @property
    def pending(self) -> int:
        """Files taken whose jobs have not ended yet."""
        return len(self._taken)

    @property
    def watching(self) -> int:
        """Inbox files seen but not yet complete."""
        return len(self._seen)

    # --- scanning ----------------------------------------------------------------------------------------

    async def scan(self) -> None:
        """Re-take what is in processing/ (a crash left it there), then take every complete inbox file."""
        async with self._lock:
            for path, workflow in self._listing("processing"):
                if path not in self._taken and not self._is_sidecar(path, workflow):
                    await self._start(path, workflow)
            now = time.monotonic()
            present: set[Path] = set()
            for path, workflow in self._listing("inbox"):
                present.add(path)
                if self._is_sidecar(path, workflow):
                    continue
                if self._ready(path, workflow, now):
                    await self._take(path, workflow)
            for gone in set(self._seen) - present:
                self._seen.pop(gone, None)

    def _listing(self, kind: str) -> list[tuple[Path, str]]:
        """Files one level under `kind/<workflow>/` (and stray files right in `kind/`, workflow '')."""
        found: list[tuple[Path, str]] = []
        base = self.folder(kind)
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.scandir(base), key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        files = sorted(os.scandir(entry.path), key=lambda e: e.name)
                        found += [(Path(f.path), entry.name) for f in files
                                  if f.is_file(follow_symlinks=False) and not self._ignored(f.name)]
                elif entry.is_file(follow_symlinks=False) and not self._ignored(entry.name):
                    found.append((Path(entry.path), ""))
        return found

    @staticmethod
    def _ignored(name: str) -> bool:
        """Hidden files, copies in progress and our own error notes are never taken."""
        return name.startswith(".") or name.endswith("~") or name.endswith(".error.txt") or \
            Path(name).suffix.lower() in IGNORED_SUFFIXES

    def _is_sidecar(self, path: Path, workflow: str) -> bool:
        """A text file in an image workflow's folder is the prompt of the image with the same stem."""
        return self.takes_image.get(workflow, False) and path.suffix.lower() in TEXT_SUFFIXES

    def _sidecar_of(self, image: Path) -> Path | None:
        """The prompt file beside an image (`<stem>.txt` or `<stem>.md`), if any."""
        for suffix in (".txt", ".md"):
            candidate = image.with_suffix(suffix)
            if not candidate.is_symlink() and candidate.is_file():
                return candidate
        return None

    def _ready(self, path: Path, workflow: str, now: float) -> bool:
        """Whether the file (and its sidecar) is complete: stable stat, no writer, a whole image."""
        if not self._stable(path, now):
            return False
        if open_for_writing(path):
            log.debug("%s is still open for writing", path.name)
            return False
        if path.suffix.lower() in IMAGE_SUFFIXES:
            try:
                whole = image_complete(path)
            except OSError:
                return False
            if whole is False and now - self._seen[path].since < self.options.truncated_grace_seconds:
                log.debug("%s looks cut short; waiting", path.name)
                return False
        sidecar = self._sidecar_of(path) if self.takes_image.get(workflow, False) else None
        return sidecar is None or (self._stable(sidecar, now) and not open_for_writing(sidecar))

    def _stable(self, path: Path, now: float) -> bool:
        """Size and mtime unchanged since a look at least `stable_seconds` ago."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._seen.pop(path, None)
            return False
        seen = self._seen.get(path)
        if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
            self._seen[path] = FileState(stat.st_size, stat.st_mtime_ns, now)
            return False
        return now - seen.since >= self.options.stable_seconds

    # --- taking ------------------------------------------------------------------------------------------

    async def _take(self, path: Path, workflow: str) -> None:
        """Rename the file (sidecar first) into processing/, then start its job."""
        target_dir = self.folder("processing", workflow)
        target_dir.mkdir(parents=True, exist_ok=True)
        target = _free_name(target_dir, path.name)
        sidecar = self._sidecar_of(path) if self.takes_image.get(workflow, False) else None
        if sidecar is not None:
            os.rename(sidecar, target_dir / (target.stem + sidecar.suffix))
            self._seen.pop(sidecar, None)
        try:
            os.rename(path, target)
        except FileNotFoundError:
            return  # gone meanwhile (someone took it back)
        self._seen.pop(path, None)
        log.info("taken %s/%s", workflow or ".", path.name)
        await self._start(target, workflow)

    async def _start(self, path: Path, workflow: str) -> None:
        """Hash the file, build its request and submit it under its key (the same job again after a crash)."""
        taken = _Taken(workflow, path, None)
        self._taken[path] = taken
        try:
            request = await asyncio.to_thread(self._request, taken)
            outcome = await self.svc.submit(request)
        except (AtelierError, ValueError, UnicodeDecodeError, OSError) as exc:  # the file itself is at fault
            await self._end(taken, None, str(exc))
            return
        except BaseException:  # the database or the like: leave the file in processing/ for the next scan
            self._taken.pop(path, None)
            raise
        taken.job_id = outcome.job.id
        log.info("%s %s/%s as job %s", "submitted" if outcome.created else "resumed", workflow, path.name,
                 str(outcome.job.id)[:8])
        if taken.caption is not None and outcome.created:
            await self._record_caption(outcome.job, taken.caption)
        if outcome.job.done:
            await self._end(taken, outcome.job, None)

    def _request(self, taken: _Taken) -> JobRequest:
        """The job for one file (ValueError saying why when it cannot become one)."""
        path, workflow = taken.path, taken.workflow
        if workflow not in self.takes_image:
            known = ", ".join(sorted(self.takes_image)) or "none"
            where = f"inbox/{workflow}/" if workflow else "inbox/ itself"
            raise ValueError(f"{where} is not a workflow's folder; drop files in inbox/<workflow>/ ({known})")
        suffix = path.suffix.lower()
        limit = MAX_PROMPT_BYTES if suffix in TEXT_SUFFIXES else self.svc.settings.max_upload_bytes
        data = _read_capped(path, limit)
        sha = hashlib.sha256(data).hexdigest()
        wants_image = self.takes_image[workflow]
        seed = int(sha[:15], 16)
        if suffix in TEXT_SUFFIXES:
            if wants_image:
                raise ValueError(f"workflow '{workflow}' needs an input image ({_accepted(IMAGE_SUFFIXES)})")
            prompt = data.decode("utf-8").strip()
            if not prompt:
                raise ValueError("the prompt file is empty: write what the image should show")
            params = GenerationParams(prompt=prompt, seed=seed)
        elif suffix in IMAGE_SUFFIXES:
            if not wants_image:
                raise ValueError(f"workflow '{workflow}' takes no input image; drop a text prompt "
                                 f"({_accepted(TEXT_SUFFIXES)}) or use an img2img/upscale folder")
            if image_complete(path) is not True:
                raise ValueError(f"{path.name} is not a whole PNG, JPEG or WEBP image")
            try:
                stored = InputStore(self.svc.settings).put(data, filename=path.name)
            except AtelierError as exc:
                raise ValueError(str(exc)) from None
            sidecar = self._sidecar_of(path)
            taken.sidecar = sidecar
            prompt = _read_capped(sidecar, MAX_PROMPT_BYTES).decode("utf-8").strip() if sidecar is not None else ""
            taken.caption = self._caption(path.name, workflow, data)
            params = GenerationParams(prompt=prompt_with_caption(taken.caption.text, prompt or
                                                                 self.options.default_prompt),
                                      seed=seed, input_image=stored.name)
        else:
            raise ValueError(f"unknown file type '{suffix or path.name}'; accepted: prompts "
                             f"{_accepted(TEXT_SUFFIXES)}, images {_accepted(IMAGE_SUFFIXES)}")
        if workflow not in self.binds_seed:  # a seed where the workflow has none would only change the cache key
            params = params.model_copy(update={"seed": None})
        return JobRequest(params=params, workflow=workflow, owner=self.options.owner, priority=self.options.priority,
                          idempotency_key=idempotency_key(workflow, sha))

    # --- captions ----------------------------------------------------------------------------------------

    def _caption(self, name: str, workflow: str, data: bytes) -> CaptionAttempt:
        """The vision model's caption of a dropped image (blocking), or why there is none; never raises."""
        settings = self.svc.settings
        if workflow in self.uncaptioned:
            attempt = CaptionAttempt(skipped=self.uncaptioned[workflow])
        elif settings.vision_model and time.monotonic() < self._vision_paused_until:
            attempt = CaptionAttempt(skipped=f"not sent: {self._vision_reason}", unavailable=True)
        else:
            try:
                attempt = caption_or_skip(data, settings, timeout_seconds=self.options.caption_timeout_seconds)
            except Exception as exc:  # a caption is optional: nothing about it may fail the file
                attempt = CaptionAttempt(skipped=f"captioning failed: {type(exc).__name__}: {exc}")
            if attempt.unavailable:
                self._vision_paused_until = time.monotonic() + self.options.caption_pause_seconds
                self._vision_reason = attempt.skipped or ""
        if attempt.caption is not None:
            log.info("%s/%s captioned by %s: %s", workflow, name, attempt.caption.model, attempt.caption.text)
        elif settings.vision_model and workflow not in self.uncaptioned:
            log.warning("%s/%s: captioning skipped (%s); its prompt is made without a caption", workflow, name,
                        attempt.skipped)
        else:
            log.info("%s/%s: captioning skipped (%s)", workflow, name, attempt.skipped)
        return attempt

    async def _record_caption(self, job: Job, attempt: CaptionAttempt) -> None:
        """Keep the dropped image's caption (or why there is none) with its job; a failure here only logs."""
        try:
            await self.svc.events.publish(job.id, job.attempts, CAPTION_EVENT, {"image": "input", **attempt.record()})
        except Exception as exc:  # the job stands without the note
            log.warning("job %s: could not record its caption (%s)", str(job.id)[:8], exc)

    # --- finishing ---------------------------------------------------------------------------------------

    async def follow(self, stop: asyncio.Event) -> None:
        """Wait for the taken files' jobs and finish each as its job ends, until `stop`."""
        while not stop.is_set():
            ids = [t.job_id for t in self._taken.values() if t.job_id is not None]
            if not ids:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.2)
                continue
            try:
                async for job in self.svc.watch(ids, timeout=1.0):
                    async with self._lock:
                        for taken in [t for t in self._taken.values() if t.job_id == job.id]:
                            await self._end(taken, job, None)
                    if stop.is_set():
                        break
            except TimeoutError:
                continue
            except Exception:  # the database went away: try again shortly
                log.exception("waiting for jobs failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _end(self, taken: _Taken, job: Job | None, error: str | None) -> None:
        """Copy outputs and move the file to done/, or write why and move it to failed/."""
        ok = job is not None and job.status == "succeeded" and error is None
        if job is not None and not ok:
            error = job.error or f"job {job.id} ended {job.status}"
        try:
            result = await asyncio.to_thread(self._settle, taken, job if ok else None, error)
        except OSError as exc:  # leave it in processing/: the next scan tries again
            log.error("could not finish %s: %s", taken.path.name, exc)
            self._taken.pop(taken.path, None)
            return
        self._taken.pop(taken.path, None)
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if self.on_outcome is not None:
            self.on_outcome(result)

    def _settle(self, taken: _Taken, job: Job | None, error: str | None) -> Outcome:
        """The file-system half of `_end` (outputs first, the move last: a crash in between repeats it)."""
        kind = "done" if job is not None else "failed"
        folder = self.folder(kind, taken.workflow)
        folder.mkdir(parents=True, exist_ok=True)
        final = _free_name(folder, taken.path.name)
        outputs: list[Path] = []
        if job is not None:
            out_dir = self.folder("outputs", taken.workflow)
            out_dir.mkdir(parents=True, exist_ok=True)
            for index, output in enumerate(job.outputs, start=1):
                ext = Path(output.comfy_filename or output.key).suffix or ".png"
                target = out_dir / f"{final.stem}-{index}{ext}"
                _write_atomic(target, self.svc.store.read(output.uri))
                outputs.append(target)
        else:
            _write_atomic(folder / f"{final.name}.error.txt", f"{error or 'failed'}\n".encode())
        sidecar = taken.sidecar or (self._sidecar_of(taken.path) if self._is_image(taken) else None)
        if sidecar is not None and sidecar.exists():
            os.rename(sidecar, folder / (final.stem + sidecar.suffix))
        os.rename(taken.path, final)
        caption = taken.caption
        return Outcome(taken.workflow, taken.path.name, job is not None, final, outputs, error,
                       job.id if job is not None else taken.job_id,
                       caption=caption.text if caption is not None else None,
                       caption_skipped=caption.skipped if caption is not None else None)

    def _is_image(self, taken: _Taken) -> bool:
        """Whether the taken file is an image (its sidecar travels with it)."""
        return taken.path.suffix.lower() in IMAGE_SUFFIXES

    # --- running -----------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, wake: asyncio.Event | None = None) -> None:
        """Scan now and whenever `wake` is set (or every `rescan_seconds`), follow jobs, until `stop`."""
        wake = wake or asyncio.Event()
        follower = asyncio.create_task(self.follow(stop), name="dropzone-follow")
        try:
            while not stop.is_set():
                try:
                    await self.scan()
                except Exception:  # e.g. the database restarting: the files wait, the next scan retries
                    log.exception("scan failed; retrying in %g s", self.options.rescan_seconds)
                # while a file is settling, look again after the stability window; else wait for an event
                delay = self.options.stable_seconds if self._seen else self.options.rescan_seconds
                waiter = asyncio.create_task(wake.wait())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                for task in (waiter, stopper):
                    task.cancel()
                wake.clear()
        finally:
            stop.set()
            await asyncio.gather(follower, return_exceptions=True)


def _accepted(suffixes: frozenset[str]) -> str:
    """The suffixes as a readable list."""
    return ", ".join(sorted(suffixes))


def _read_capped(path: Path, limit: int) -> bytes:
    """A regular file's bytes, never through a link and never more than `limit` (ValueError saying so)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"{path.name} is a link; drop the file itself") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path.name} is over {limit:,} bytes; drop a smaller file")
    return data


def _free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/stem-N.ext` when that name is taken."""
    target = folder / name
    number = 1
    while target.exists():
        number += 1
        target = folder / f"{Path(name).stem}-{number}{Path(name).suffix}"
    return target


def _write_atomic(target: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder and rename it into place."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def describe(outcome: Outcome) -> dict[str, Any]:
    """An outcome as a JSON-ready dict."""
    return {"workflow": outcome.workflow, "name": outcome.name, "ok": outcome.ok, "path": str(outcome.path),
            "outputs": [str(p) for p in outcome.outputs], "error": outcome.error,
            "job": str(outcome.job_id) if outcome.job_id else None, "caption": outcome.caption,
            "caption_skipped": outcome.caption_skipped}

