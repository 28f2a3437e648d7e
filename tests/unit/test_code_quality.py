"""The codebase stays ruff- and mypy-clean, and every package imports from a built wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def _run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_ruff_clean() -> None:
    result = _run(sys.executable, "-m", "ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_clean() -> None:
    result = _run(sys.executable, "-m", "mypy", "atelier", "app.py", "bench", "tests", "examples")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_packages_import_from_built_wheel(tmp_path: Path) -> None:
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                 str(tmp_path / "dist"), str(ROOT))
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("comfy_atelier-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/", 1)[0] for name in names if not name.startswith("comfy_atelier-")} == {"atelier"}, names
    assert any(n.startswith("atelier/workflows/") and n.endswith(".meta.json") for n in names), names
    assert not any(n.startswith(("tests/", "bench/")) for n in names), "tests or bench leaked into the wheel"
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        "import importlib, sys\n"
        f"for name in {PACKAGES!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(target)!r}), (name, module.__file__)\n"
        "from atelier.tools.catalog import list_templates\n"
        "assert list_templates().templates, 'no shipped workflow found in the wheel'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = _run(sys.executable, "-P", "-c", code, cwd=tmp_path, env=env)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "atelier").rglob("__init__.py")}
    found |= {"atelier." + ".".join(init.parent.relative_to(ROOT).parts)
              for folder in ("tools", "agents", "graphs", "workflows") for init in (ROOT / folder).rglob("__init__.py")}
    found = {name for name in found if not name.startswith("atelier.atelier") and "__pycache__" not in name}
    # rglob does not enter the links atelier/tools etc., so each folder is counted once, under its atelier name.
    assert set(PACKAGES) == found, (sorted(set(PACKAGES) - found), sorted(found - set(PACKAGES)))
