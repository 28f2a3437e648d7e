"""Prompt templates as sandboxed Jinja2: checking a template, the variables it reads, and rendering it here.

Checking and listing variables only parse (a template has at most 20 000 characters), so they run wherever they
are called. `render_here` runs the template itself, with sizes bounded (tools/prompts/sandbox.py) and the output
capped as it is produced, but with no time or memory budget: servers and the CLI render through
tools/prompts/rendering.py, which calls it in a worker process that has one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from jinja2 import Template, TemplateError, UndefinedError, meta
from jinja2.exceptions import SecurityError

from atelier.tools.errors import AtelierError
from atelier.tools.prompts.sandbox import PromptSandbox, SandboxLimitError

__all__ = ["MAX_OUTPUT", "MAX_TEMPLATE", "PromptTemplateError", "check_template", "merged_values", "render_here",
           "template_variables"]

# Templates come from people and agents: no access to Python internals (sandbox), no mutation of values
# (immutable), a missing variable is an error instead of an empty string (strict), no step makes a huge value.
# Reading (parse, variables) uses a sandbox whose filters never run, so it is cheap wherever it is called.
_ENV = PromptSandbox()
_READER = PromptSandbox(runs=False)
MAX_TEMPLATE = 20_000
MAX_OUTPUT = 8_000


class PromptTemplateError(AtelierError):
    """A prompt template that does not parse, uses what the sandbox forbids, lacks a variable or is over a limit."""


def check_template(template: str) -> None:
    """Raise PromptTemplateError naming the problem when `template` is not a usable prompt template."""
    if not template.strip():
        raise PromptTemplateError("the prompt template is empty; write the prompt text, with {{ variables }} "
                                  "where values go")
    if len(template) > MAX_TEMPLATE:
        raise PromptTemplateError(f"the prompt template has {len(template)} characters; keep it under "
                                  f"{MAX_TEMPLATE}")
    _variables(template)


@lru_cache(maxsize=256)
def _variables(template: str) -> tuple[str, ...]:
    """The template's free variables, sorted (PromptTemplateError when it does not parse)."""
    try:
        return tuple(sorted(meta.find_undeclared_variables(_READER.parse(template))))
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise PromptTemplateError(f"the prompt template is not valid Jinja2{where}: {exc}; check the "
                                  "{{ }} and {% %} pairs") from exc
    except RecursionError as exc:
        raise PromptTemplateError("the prompt template nests too deeply to read; use fewer nested brackets, "
                                  "conditions and loops") from exc


def template_variables(template: str) -> list[str]:
    """The variables a template reads, sorted (those it sets itself with {% set %} are not counted)."""
    check_template(template)
    return list(_variables(template))


def merged_values(template: str, values: Mapping[str, Any], defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """`values` over `defaults`; PromptTemplateError naming every variable the template reads that neither gives."""
    merged = {**(defaults or {}), **values}
    missing = [name for name in template_variables(template) if name not in merged]
    if missing:
        raise PromptTemplateError(f"the prompt needs a value for {', '.join(missing)}; pass "
                                  + " ".join(f"--var {name}=..." for name in missing)
                                  + " (or give the version defaults)")
    return merged


@lru_cache(maxsize=64)
def _compiled(template: str) -> Template:
    """The template compiled in the sandbox (a worker renders the same few templates again and again)."""
    return _ENV.from_string(template)


def _collapsed(chunks: Iterable[str]) -> str:
    """The output with whitespace collapsed to single spaces, refused as soon as it passes MAX_OUTPUT."""
    buffer: list[str] = []
    size = 0
    for chunk in chunks:
        buffer.append(chunk)
        size += len(chunk)
        if size > 2 * MAX_OUTPUT:
            raw = "".join(buffer)
            text = " ".join(raw.split())
            if len(text) > MAX_OUTPUT:
                break
            buffer = [text + (" " if raw[-1:].isspace() else "")]
            size = len(buffer[0])
    text = " ".join("".join(buffer).split())
    if len(text) > MAX_OUTPUT:
        raise PromptTemplateError(f"the rendered prompt is longer than {MAX_OUTPUT} characters; keep it under "
                                  f"{MAX_OUTPUT}")
    return text


def render_here(template: str, values: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None) -> str:
    """The prompt text, rendered in this process and thread: `values` over `defaults`, whitespace collapsed.

    No time or memory budget: call it through tools/prompts/rendering.py (a worker process) unless this *is* the
    worker.
    """
    merged = merged_values(template, values, defaults)
    try:
        return _collapsed(_compiled(template).generate(**merged))
    except SandboxLimitError as exc:
        raise PromptTemplateError(f"the prompt template was stopped: {exc}; a prompt needs no such sizes, check "
                                  "the template's numbers and repeats") from exc
    except SecurityError as exc:
        raise PromptTemplateError(f"the prompt template does something the sandbox forbids ({exc}); use only "
                                  "variables, filters, conditions and loops") from exc
    except UndefinedError as exc:
        raise PromptTemplateError(f"the prompt template reads something that is not there: {exc}") from exc
    except TemplateError as exc:
        raise PromptTemplateError(f"the prompt template failed to render: {exc}") from exc
    except RecursionError as exc:
        raise PromptTemplateError("the prompt template recurses too deeply (a macro or loop calling itself); "
                                  "write it without recursion") from exc
    except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
        raise PromptTemplateError(f"the prompt template failed to render: {type(exc).__name__}: "
                                  f"{str(exc)[:500]}") from exc
