"""The layers hold: import-linter's contracts (.importlinter) pass, and nothing imports the folders by bare names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `from tools.x import y`, `import graphs.z`, also inside strings (code run in a child process): the folders are
# importable only as atelier.tools, atelier.graphs, atelier.agents and atelier.workflows.
_FOLDER = r"(?:tools|graphs|agents|workflows)"
BARE = re.compile(rf"(?:^\s*|[\"';]\s*)(?:from {_FOLDER}[. ]|import {_FOLDER}\b)")


def test_import_contracts_are_kept() -> None:
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def test_no_module_imports_a_folder_by_its_bare_name() -> None:
    offenders = []
    for folder in ("atelier", "tools", "graphs", "agents", "workflows", "tests", "bench", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.is_relative_to(ROOT / "atelier") and path.relative_to(ROOT / "atelier").parts[0] in (
                    "tools", "graphs", "agents", "workflows"):
                continue  # the links: the same files are read under their own folder
            for line_no, line in enumerate(path.read_text().splitlines(), 1):
                if BARE.search(line) and "test_layers" not in path.name:
                    offenders.append(f"{path.relative_to(ROOT)}:{line_no}: {line.strip()}")
    for path in (ROOT / "app.py",):
        offenders += [f"app.py: {line}" for line in path.read_text().splitlines() if BARE.search(line)]
    assert offenders == [], "\n".join(offenders)
