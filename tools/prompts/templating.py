"""Prompt templates as sandboxed Jinja2: the variables a template uses, and rendering with clear errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tools.errors import AtelierError

__all__ = ["PromptTemplateError", "check_template", "render_template", "template_variables"]

# Templates come from people and agents: no access to Python internals (sandbox), no mutation of values
# (immutable), and a missing variable is an error instead of an empty string (strict).
_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True,
                                     lstrip_blocks=True, keep_trailing_newline=False)
_MAX_TEMPLATE = 20_000
_MAX_OUTPUT = 8_000


class PromptTemplateError(AtelierError):
    """A prompt template that does not parse, uses what the sandbox forbids, or lacks a variable."""


def check_template(template: str) -> None:
    """Raise PromptTemplateError naming the problem when `template` is not a usable prompt template."""
    if not template.strip():
        raise PromptTemplateError("the prompt template is empty; write the prompt text, with {{ variables }} "
                                  "where values go")
    if len(template) > _MAX_TEMPLATE:
        raise PromptTemplateError(f"the prompt template has {len(template)} characters; keep it under "
                                  f"{_MAX_TEMPLATE}")
    try:
        _ENV.parse(template)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise PromptTemplateError(f"the prompt template is not valid Jinja2{where}: {exc}; check the "
                                  "{{ }} and {% %} pairs") from exc


def template_variables(template: str) -> list[str]:
    """The variables a template reads, sorted (those it sets itself with {% set %} are not counted)."""
    check_template(template)
    return sorted(meta.find_undeclared_variables(_ENV.parse(template)))


def render_template(template: str, values: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None) -> str:
    """The prompt text: `values` over `defaults`, rendered in the sandbox; whitespace collapsed to single spaces."""
    check_template(template)
    merged = {**(defaults or {}), **values}
    missing = [name for name in template_variables(template) if name not in merged]
    if missing:
        raise PromptTemplateError(f"the prompt needs a value for {', '.join(missing)}; pass "
                                  + " ".join(f"--var {name}=..." for name in missing)
                                  + " (or give the version defaults)")
    try:
        text = _ENV.from_string(template).render(**merged)
    except SecurityError as exc:
        raise PromptTemplateError(f"the prompt template does something the sandbox forbids ({exc}); use only "
                                  "variables, filters, conditions and loops") from exc
    except UndefinedError as exc:
        raise PromptTemplateError(f"the prompt template reads something that is not there: {exc}") from exc
    except TemplateError as exc:
        raise PromptTemplateError(f"the prompt template failed to render: {exc}") from exc
    text = " ".join(text.split())
    if len(text) > _MAX_OUTPUT:
        raise PromptTemplateError(f"the rendered prompt has {len(text)} characters; keep it under {_MAX_OUTPUT}")
    return text
