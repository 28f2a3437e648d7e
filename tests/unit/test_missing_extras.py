"""A front end whose framework is not installed (CrewAI, ag2 are extras) says in one line which `pip install` to run;
everything else imports and explains Ollama without them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atelier.tools.errors import AtelierError, MissingExtraError

ROOT = Path(__file__).resolve().parents[2]


def _python(*lines: str) -> subprocess.CompletedProcess[str]:
    """Run Python code in a fresh interpreter from the repository root."""
    return subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def _without(*modules: str) -> str:
    """Code that makes importing these modules fail as if they were not installed."""
    return f"import sys\nfor name in {modules!r}:\n    sys.modules[name] = None"


@pytest.mark.parametrize(("module", "blocked", "expected"), [
    ("atelier.adapters.crewai", "crewai", "CrewAI is not installed: run pip install 'comfy-atelier[crewai]'"),
    ("atelier.adapters.autogen", "autogen",
     "AutoGen (ag2) is not installed: run pip install 'comfy-atelier[autogen]'"),
], ids=["crewai", "autogen"])
def test_importing_a_front_end_without_its_framework_is_one_line_naming_the_install(
    module: str, blocked: str, expected: str
) -> None:
    caught = _python(_without(blocked), "from atelier.tools.errors import AtelierError", "try:",
                     f"    import {module}", "except AtelierError as exc:", "    print(type(exc).__name__, exc)")
    assert caught.returncode == 0, caught.stderr
    assert caught.stdout.splitlines() == [f"MissingExtraError {expected}"]

    uncaught = _python(_without(blocked), f"import {module}")  # what a person sees
    assert uncaught.returncode == 1
    assert uncaught.stderr.strip().splitlines()[-1] == f"atelier.tools.errors.MissingExtraError: {expected}"
    assert "ModuleNotFoundError" not in uncaught.stderr


def test_the_rest_imports_and_explains_ollama_without_crewai_ag2_or_openai() -> None:
    ran = _python(
        _without("crewai", "autogen", "openai"),
        "import atelier.studio, atelier.embed, atelier.api.jobs, atelier.cli.main, atelier.mcp.server",
        "import atelier.adapters.langchain_tools, atelier.graphs.supervisor",
        "import httpx",
        "from atelier.tools.service_errors import explain_ollama_error",
        "print(explain_ollama_error(httpx.ConnectError('refused'), url='http://gpu:11434', model='qwen3'))",
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == ("Ollama at http://gpu:11434 is unreachable: start it (`ollama serve`) or fix "
                                  "OLLAMA_URL")


def test_a_missing_dependency_or_a_wrong_version_is_named_too() -> None:
    dependency = ModuleNotFoundError("No module named 'chromadb.utils'", name="chromadb.utils")
    assert str(MissingExtraError("crewai", "CrewAI", "crewai", dependency)) == (
        "CrewAI is not installed completely (its module 'chromadb' is missing): run pip install "
        "'comfy-atelier[crewai]'")
    version = ImportError("cannot import name 'Tool' from 'autogen.tools'", name="autogen.tools")
    error = MissingExtraError("autogen", "AutoGen (ag2)", "autogen", version)
    assert isinstance(error, AtelierError) and "\n" not in str(error)
    assert str(error) == ("AutoGen (ag2) cannot be imported (cannot import name 'Tool' from 'autogen.tools'): run pip "
                          "install 'comfy-atelier[autogen]'")
