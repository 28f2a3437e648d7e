"""Atelier: a LangGraph multi-agent studio on ComfyUI, Ollama, Qdrant and PostgreSQL — the one import name.

The package holds the front ends (`atelier.chat`, `atelier.api`, `atelier.cli`, `atelier.mcp`, `atelier.adapters`,
`atelier.embed`) and, mapped from the repository's top-level folders, the graphs (`atelier.graphs`), the
supervisor's agents (`atelier.agents`), the services and the toolkit (`atelier.tools`) and the shipped workflows
(`atelier.workflows`). See docs/architecture.md.

From Python, `from atelier import open_atelier` (atelier/embed.py): the names below are imported on first use, so
`import atelier.tools.settings` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "TOOLS", "AskResult", "AtelierError", "GenerationParams", "Job", "JobInfo", "JobRequest", "LedgerService",
    "Settings", "Studio", "SupervisorDeps", "ToolContext", "ToolSpec", "build_supervisor", "langchain_tools",
    "load_settings", "open_atelier",
]


def __getattr__(name: str) -> Any:
    """The embedding API's names, from atelier.embed on first use."""
    if name in __all__:
        return getattr(importlib.import_module("atelier.embed"), name)
    raise AttributeError(f"module 'atelier' has no attribute {name!r}")
