"""pyproject.toml installs by need: frameworks a person may not use are extras, `all` has them, dev has the tests'."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME = canonicalize_name(PROJECT["name"])
MAIN: list[str] = PROJECT["dependencies"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]
# The frameworks only one front end needs: extra name → the package it installs.
FRAMEWORKS = {"crewai": "crewai", "autogen": "ag2"}
# Microsoft's AutoGen 0.7 pins protobuf 5 against the LangGraph server's 6: it needs an environment of its own.
APART = "autogen-agentchat"
# Extras that are not features: the test tooling, and `all` itself.
NOT_FEATURES = {"dev", "all"}
# Folders whose Python the test command runs (tests, and the benches their smoke tests start).
TESTED = ("tests", "bench")


def _direct(requirements: Iterable[str]) -> set[str]:
    """Canonical names of the packages a list of requirements asks for, references to this project resolved."""
    names: set[str] = set()
    for text in requirements:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == NAME:
            for extra in requirement.extras:
                names |= _extra(extra)
        else:
            names.add(canonicalize_name(requirement.name))
    return names


def _extra(extra: str) -> set[str]:
    """Canonical names of the packages `pip install comfy-atelier[EXTRA]` asks for beyond the main install."""
    assert extra in EXTRAS, f"pyproject.toml refers to an extra {extra!r} it does not define"
    return _direct(EXTRAS[extra])


def _readme_command(marker: str) -> str:
    """The one line of the README's set-up section that ends with MARKER (the start or the test command)."""
    setup = (ROOT / "README.md").read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in setup.splitlines() if line.startswith("python3.11 -m venv") and line.endswith(marker)]
    assert len(lines) == 1, f"the README's set-up should have one command ending in {marker!r}: {lines}"
    return lines[0]


def _imported_modules(folders: Iterable[str]) -> dict[str, str]:
    """Top-level third-party modules imported anywhere in FOLDERS → one file that imports each."""
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".", 1)[0]
                    first_party = (ROOT / top).exists() or (ROOT / f"{top}.py").exists()
                    if top not in sys.stdlib_module_names and not first_party:
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def _closure(requirements: Iterable[str]) -> Iterator[str]:
    """Every installed distribution that REQUIREMENTS bring in, following installed metadata (extras and markers)."""
    pending = [Requirement(text) for text in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        requirement = pending.pop()
        name, extras = canonicalize_name(requirement.name), frozenset(requirement.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        if name == NAME:
            pending += [Requirement(text) for text in MAIN]
            pending += [Requirement(text) for extra in extras for text in EXTRAS[extra]]
            continue
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not for this platform or Python (its marker said so), or not installed: the caller reports
        yield name
        for text in requires:
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in {"", *extras}):
                pending.append(needed)


def test_frameworks_a_person_may_not_use_are_extras_not_main_dependencies() -> None:
    main = _direct(MAIN)
    for extra, package in FRAMEWORKS.items():
        assert package not in main, f"{package} is a main dependency: move it to the {extra!r} extra"
        assert package in _extra(extra), f"the {extra!r} extra should install {package}"
    for package in ("pyautogen", "autogen-agentchat", "autogen-core", "autogen-ext"):
        assert package not in main, f"{package} is a main dependency"
    assert _extra(APART).isdisjoint(main)


def test_all_installs_every_extra_except_the_one_that_needs_its_own_environment() -> None:
    everything = _extra("all")
    for extra in sorted(set(EXTRAS) - NOT_FEATURES - {APART}):
        missing = _extra(extra) - everything
        assert not missing, f"`all` lacks the {extra!r} extra's {sorted(missing)}"
    assert everything.isdisjoint(_extra(APART)), "autogen-agentchat cannot install beside the LangGraph server"
    assert _extra("dev").isdisjoint(_extra(APART))


def test_dev_installs_every_extra_the_tests_exercise() -> None:
    missing = _extra("all") - _extra("dev")
    assert not missing, f"the test command installs `.[dev]`, which lacks {sorted(missing)}"


def test_dev_installs_every_package_the_tests_and_benches_import() -> None:
    installed = set(_closure([f"{NAME}[dev]"]))
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for module, where in _imported_modules(TESTED).items():
        offered = {canonicalize_name(dist) for dist in providers.get(module, [])}
        if not offered & installed:
            missing[module] = f"{where} ({', '.join(sorted(offered)) or 'not installed here'})"
    assert not missing, f"`pip install -e '.[dev]'` does not bring what these files import: {missing}"


def test_readme_starts_the_chat_on_the_main_install_and_tests_on_dev() -> None:
    start = _readme_command("app.py")
    assert re.search(r"pip install (-q )?-e \.( |$)", start), f"the first command should install `.` only: {start}"
    test = _readme_command("-m pytest")
    assert "-e '.[dev]'" in test, test
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines(), ".ci/run should run the README's test command verbatim"
    readme = (ROOT / "README.md").read_text()
    for extra in (*FRAMEWORKS, "all"):
        assert f"comfy-atelier[{extra}]" in readme, f"the README should say what the {extra!r} extra adds"
