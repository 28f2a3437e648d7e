"""Attacks on the CLI through data it reads: batch rows (CSV/JSONL from anywhere) and files handed to it.

A person running `atelier` acts with their own rights (its options are theirs, like settings); what a batch file's
rows say is data: a row names no owner, no workflow file, and no input image outside the batch file's folder.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import psycopg
from PIL import Image
from typer.testing import CliRunner, Result

from atelier.cli.main import app


def _env(database: str, tmp_path: Path) -> dict[str, str]:
    """A fresh database and data folder; no ComfyUI needed (nothing runs)."""
    return {"DATABASE_URL": database, "COMFYUI_URLS": "http://127.0.0.1:9", "ATELIER_DATA_DIR": str(tmp_path / "d"),
            "COLUMNS": "500"}


def _said(result: Result) -> str:
    """What a command told the person: its stderr, or the error `atelier` prints as one line (`main`)."""
    return result.stderr + (str(result.exception) if result.exception else "")


def _png() -> bytes:
    """A small real PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def test_batch_rows_cannot_name_owners_workflow_files_or_outside_images(machine_pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "outside.png").write_bytes(_png())
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "cat.png").write_bytes(_png())
    os.symlink(tmp_path / "outside.png", folder / "link.png")
    rows = [
        {"prompt": "an owl", "owner": "root"},
        {"prompt": "an owl", "workflow": str(tmp_path / "flow.json")},
        {"prompt": "an owl", "workflow": "img2img", "input_image": str(tmp_path / "outside.png")},
        {"prompt": "an owl", "workflow": "img2img", "input_image": "../outside.png"},
        {"prompt": "an owl", "workflow": "img2img", "input_image": "link.png"},
        {"prompt": "an owl", "idempotency": "x"},
        {"prompt": "an owl", "workflow": "img2img", "input_image": "cat.png"},
    ]
    batch = folder / "rows.jsonl"
    batch.write_text("\n".join(json.dumps(row) for row in rows))
    result = CliRunner().invoke(app, ["batch", str(batch), "--owner", "ana"], env=_env(machine_pg_url, tmp_path))
    assert result.exit_code == 1
    lines = {int(line.split("line ", 1)[1].split(":", 1)[0]): line
             for line in result.stderr.splitlines() if line.startswith("skipped line ")}
    assert "owner column is not read" in lines[1]
    assert "is a file path" in lines[2]
    assert "beside the batch file" in lines[3] and "beside the batch file" in lines[4]
    assert "beside the batch file" in lines[5]
    assert "unknown column" in lines[6]
    assert 7 not in lines and "1 new job(s)" in result.stderr
    with psycopg.connect(machine_pg_url) as conn:
        ((owner, image),) = conn.execute("SELECT owner, params->>'input_image' FROM jobs").fetchall()
    assert owner == "ana" and (tmp_path / "d" / "inputs" / image).read_bytes() == _png()


def test_submit_refuses_workflow_files_and_stores_images(machine_pg_url: str, tmp_path: Path) -> None:
    env = _env(machine_pg_url, tmp_path)
    flow = tmp_path / "flow.json"
    flow.write_text("{}")
    refused = CliRunner().invoke(app, ["submit", "x", "--workflow", str(flow)], env=env)
    assert refused.exit_code == 1 and "is a file path" in _said(refused)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("private notes")
    bad = CliRunner().invoke(app, ["inputs", "add", str(not_an_image)], env=env)
    assert bad.exit_code == 1 and "not an image Atelier can read" in _said(bad)
    (tmp_path / "fox.png").write_bytes(_png())
    stored = CliRunner().invoke(app, ["inputs", "add", str(tmp_path / "fox.png")], env=env)
    assert stored.exit_code == 0
    name = stored.stdout.split("\t", 1)[0]
    made = CliRunner().invoke(app, ["submit", "a fox", "--workflow", "img2img", "--image", str(tmp_path / "fox.png")],
                              env=env)
    assert made.exit_code == 0, made.stderr
    with psycopg.connect(machine_pg_url) as conn:
        ((image,),) = conn.execute("SELECT params->>'input_image' FROM jobs").fetchall()
    assert image == name and not Path(image).is_absolute()
