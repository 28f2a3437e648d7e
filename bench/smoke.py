"""The `--smoke` size every bench offers: a run of seconds that shows the bench still works, not how fast it is."""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from typing import Any

__all__ = ["missing", "parse_args", "skipped_line"]


def parse_args(parser: argparse.ArgumentParser, smoke: dict[str, Any],
               argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Add `--smoke` and parse; with it, `smoke`'s sizes replace the defaults (options given still win)."""
    sizes = ", ".join(f"--{name.replace('_', '-')} {_shown(value)}" for name, value in smoke.items())
    parser.add_argument("--smoke", action="store_true",
                        help=f"a run of seconds that checks the bench still works ({sizes}); its figures mean little")
    known, _ = parser.parse_known_args(argv)
    if known.smoke:
        parser.set_defaults(**smoke)
    args = parser.parse_args(argv)
    if args.smoke:
        print(f"smoke run ({sizes}): these figures show the bench works, not how fast Atelier is", flush=True)
    return args


def _shown(value: Any) -> str:
    """An option's value as it would be typed."""
    if isinstance(value, list | tuple):
        return " ".join(map(str, value))
    return str(value)


def missing(module: str) -> bool:
    """Whether `module` (an optional package a comparison needs) cannot be imported here."""
    return importlib.util.find_spec(module) is None


def skipped_line(comparison: str, package: str) -> str:
    """The line a bench prints when it leaves out a comparison because the package it needs is not installed."""
    return f"skipped: {comparison}: {package} is not installed (pip install -e '.[bench]' adds it)"
