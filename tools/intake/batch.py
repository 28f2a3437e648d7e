"""Batch files: one job per CSV row or JSONL line, with keys that make a rerun add nothing twice.

Columns (CSV header or JSON keys) map to bindings — prompt, negative, seed, steps, cfg, width, height,
size (WxH), denoise, batch_size, input_image — plus per-row job options: workflow and priority. A row is data
from anywhere, so it names no owner (the command's `--owner` does) and its `input_image` is a file beside the
batch file (in its folder or below; never a link or an absolute path), copied into the inputs store.
Each row's idempotency key is the batch id (from the file's absolute path), its line number and a hash
of its content: running the same file again after a crash returns the jobs already made, and an edited
row becomes a new job.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from atelier.tools.errors import AtelierError
from atelier.tools.inputs import InputStore
from atelier.tools.ledger.models import JobRequest
from atelier.tools.schemas import GenerationParams, parse_size

__all__ = ["BINDING_COLUMNS", "JOB_COLUMNS", "BatchFileError", "BatchRow", "batch_id", "read_batch"]

BINDING_COLUMNS: tuple[str, ...] = (
    "prompt", "negative", "seed", "steps", "cfg", "width", "height", "size", "denoise", "batch_size", "input_image",
)
JOB_COLUMNS: tuple[str, ...] = ("workflow", "priority")


class BatchFileError(AtelierError):
    """The batch file as a whole cannot be read (missing, unknown format, bad header)."""


@dataclass(frozen=True)
class BatchRow:
    """One line of the file: a request ready to submit, or the reason it cannot be."""

    line: int
    request: JobRequest | None
    error: str | None = None


def batch_id(path: Path) -> str:
    """A stable id for a batch file: its name plus a hash of its absolute path."""
    resolved = path.expanduser().resolve()
    return f"{resolved.stem}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:10]}"


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """Drop empty cells; expand `size` into width and height."""
    out = {k.strip(): v for k, v in values.items() if k is not None and v is not None and str(v).strip() != ""}
    if "size" in out:
        out["width"], out["height"] = parse_size(str(out.pop("size")))
    return out


def _input_image(value: str, folder: Path, inputs: InputStore | None) -> str:
    """A row's input image: a file in the batch file's folder (or below), stored in the inputs store; its name."""
    if inputs is None:
        raise ValueError("input_image: this batch is read without an inputs store; run it with `atelier batch`")
    relative = Path(value.strip())
    root = folder.resolve()
    candidate = root / relative
    if relative.is_absolute() or ".." in relative.parts or candidate.is_symlink() \
            or not candidate.resolve().is_relative_to(root):
        raise ValueError(f"input_image {value!r} must be a file beside the batch file (in {root} or below), "
                         "named relative to it")
    if not candidate.is_file():
        raise ValueError(f"input_image {value!r} is not a file in {root}")
    try:
        return inputs.put_file(candidate).name
    except AtelierError as exc:
        raise ValueError(f"input_image: {exc}") from None


def _request(values: dict[str, Any], batch: str, line: int, owner: str, workflow: str | None,
             use_cache: bool, folder: Path, inputs: InputStore | None) -> JobRequest:
    """Build one row's JobRequest (ValueError / ValidationError on bad values)."""
    raw = _clean(values)
    if "owner" in raw:
        raise ValueError("the owner column is not read (a file cannot say whose jobs it makes); run the batch with "
                         "--owner instead, or drop the column")
    unknown = sorted(set(raw) - set(BINDING_COLUMNS) - set(JOB_COLUMNS) - {"width", "height"})
    if unknown:
        raise ValueError(
            f"unknown column(s) {', '.join(unknown)}; use {', '.join(BINDING_COLUMNS + JOB_COLUMNS)}"
        )
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
    if "input_image" in raw:
        raw["input_image"] = _input_image(str(raw["input_image"]), folder, inputs)
    params = GenerationParams.model_validate({k: v for k, v in raw.items() if k not in JOB_COLUMNS})
    return JobRequest(
        params=params,
        workflow=str(raw.get("workflow") or workflow or "") or None,
        priority=int(raw.get("priority", 0)),
        owner=owner,
        idempotency_key=f"batch:{batch}:{line}:{digest}",
        use_cache=use_cache,
        batch=batch,
        batch_row=line,
    )


def _describe(exc: Exception) -> str:
    """A one-line reason for a bad row."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
    return str(exc)


def _rows(path: Path) -> list[tuple[int, dict[str, Any] | str]]:
    """(line number, values or a parse error) for every data line of a CSV or JSONL file."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or "prompt" not in [f.strip() for f in reader.fieldnames]:
            raise BatchFileError(f"{path}: the CSV header has no 'prompt' column (first line: {reader.fieldnames})")
        return [(reader.line_num, dict(row)) for row in reader]
    if suffix in (".jsonl", ".ndjson"):
        rows: list[tuple[int, dict[str, Any] | str]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                rows.append((number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
                continue
            rows.append((number, value) if isinstance(value, dict) else (number, "not a JSON object"))
        return rows
    raise BatchFileError(f"{path}: unknown batch format {suffix or '(no suffix)'}; use a .csv or .jsonl file")


def read_batch(path: Path, *, owner: str = "batch", workflow: str | None = None,
               use_cache: bool = True, inputs: InputStore | None = None) -> tuple[str, list[BatchRow]]:
    """The batch id and one BatchRow per data line; bad rows carry their error instead of a request.

    `inputs` stores the rows' input images (without it a row with an input_image is refused).
    """
    if not path.is_file():
        raise BatchFileError(f"batch file {path} does not exist")
    batch = batch_id(path)
    out = []
    for line, values in _rows(path):
        if isinstance(values, str):
            out.append(BatchRow(line, None, values))
            continue
        try:
            out.append(BatchRow(line, _request(values, batch, line, owner, workflow, use_cache, path.parent, inputs)))
        except (ValueError, ValidationError, AtelierError) as exc:
            out.append(BatchRow(line, None, _describe(exc)))
    return batch, out
