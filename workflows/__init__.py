"""Shipped ComfyUI workflows: NAME.json (API format) with NAME.meta.json (bindings and catalog entry) beside it."""

from pathlib import Path

__all__ = ["SHIPPED_DIR"]

# The folder holding the shipped JSON files, wherever the package is installed.
SHIPPED_DIR: Path = Path(__file__).parent
