"""The Jinja2 sandbox prompt templates render in, with sizes bounded before Python allocates them.

Jinja's ImmutableSandboxedEnvironment keeps templates away from Python internals and from mutating values, and
limits `range`; it does not stop `'x' * 4000000000`, `'x'|center(4000000000)`, `'%0999999999d' % 1` or
`10 ** 100000000`, each of which asks Python for gigabytes (or hours) in one step. `PromptSandbox` checks
such steps first (the `*`, `**`, `%` and `+` operators, the filters and string methods that take a size, `join`,
`namespace` attributes) and refuses with `SandboxLimitError` naming what the template did; every value a call
or filter returns is bounded too. What these checks cannot see (a loop of loops, a macro calling itself twice,
a variable doubled with `~` line after line) is what the worker process's time and memory limits are for
(tools/prompts/rendering.py).

This module imports only jinja2 and the standard library: it runs in that worker.
"""

from __future__ import annotations

import inspect
import re
import string
import types
from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from jinja2 import StrictUndefined, pass_context, pass_environment
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from atelier.tools.errors import AtelierError

__all__ = ["MAX_INT_BITS", "MAX_VALUE", "PromptSandbox", "SandboxLimitError", "bounded_join"]

# The most characters (or items) any value a template makes may have: prompts are a few hundred characters,
# and the rendered prompt is capped far lower (templating._MAX_OUTPUT).
MAX_VALUE = 100_000
# The largest integer a template may compute (2 ** 4096 has 1234 digits).
MAX_INT_BITS = 4_096
_SEQUENCES = (str, list, tuple)
# printf-style conversions: %[(key)][flags][width][.precision][length]type
_CONTEXT_NAMES = ("context", "eval_ctx", "environment", "env")
_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


class SandboxLimitError(SecurityError, AtelierError):
    """A template step that would make a value larger than a prompt template may (names the step and sizes)."""


def _size(value: Any) -> int:
    """How many characters or items a value holds (0 for values without a length that matters here)."""
    return len(value) if isinstance(value, (*_SEQUENCES, dict, set, frozenset, bytes)) else 0


def _refuse_size(what: str, size: int) -> None:
    """Raise when `what` would make `size` characters or items (more than MAX_VALUE)."""
    if size > MAX_VALUE:
        raise SandboxLimitError(f"{what} would make {size} characters or items; a prompt template may build "
                                f"values of at most {MAX_VALUE}")


def _refuse_number(what: str, number: Any, limit: int = MAX_VALUE) -> None:
    """Raise when a size argument is a number above `limit` (or below -limit)."""
    if isinstance(number, int) and abs(number) > limit:
        raise SandboxLimitError(f"{what} was given {number}; sizes above {limit} are refused in prompt templates")


def _bounded(what: str, value: Any) -> Any:
    """`value` when it is within MAX_VALUE, else SandboxLimitError naming `what` made it."""
    _refuse_size(what, _size(value))
    return value


def _check_percent(what: str, fmt: str) -> None:
    """Refuse printf-style widths and precisions above MAX_VALUE, and `*` (a width taken from the values)."""
    for match in _PERCENT.finditer(fmt):
        for number in match.groups():
            if number == "*":
                raise SandboxLimitError(f"{what}: '*' widths are refused in prompt templates; write the width")
            if number is not None and (len(number) > 6 or int(number) > MAX_VALUE):
                raise SandboxLimitError(f"{what}: the width {number} is above {MAX_VALUE}")


def _check_format(fmt: str) -> None:
    """Refuse str.format specs whose width comes from a value or is above MAX_VALUE."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the call itself reports the malformed format string
    for _, _, spec, _ in fields:
        if spec and "{" in spec:
            raise SandboxLimitError(".format(): nested {} in a format spec are refused in prompt templates")
        for number in re.findall(r"\d+", spec or ""):
            if len(number) > 6 or int(number) > MAX_VALUE:
                raise SandboxLimitError(f".format(): the width {number} is above {MAX_VALUE}")


def _replaced_size(text: str, old: str, new: str, count: int | None) -> int:
    """The length of text.replace(old, new, count), computed without making it."""
    hits = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def bounded_join(separator: str, items: Iterable[Any]) -> str:
    """`separator.join(map(str, items))`, refused as soon as the result would pass MAX_VALUE."""
    parts: list[str] = []
    size = 0
    for item in items:
        text = str(item)
        size += len(text) + (len(separator) if parts else 0)
        _refuse_size("join", size)
        parts.append(text)
    return separator.join(parts)


def _binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `left operator right` when its result would be too large (checked before computing it)."""
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _SEQUENCES) and isinstance(times, int):
                _refuse_size(f"{type(seq).__name__} * {times}", len(seq) * max(times, 0))
        if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise SandboxLimitError(f"'*' would make a number of more than {MAX_INT_BITS} bits")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 \
                and max(abs(left).bit_length(), 1) * right > MAX_INT_BITS:
            raise SandboxLimitError(f"{left} ** {right} would make a number of more than {MAX_INT_BITS} bits")
    elif operator == "+":
        if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            _refuse_size("'+'", len(left) + len(right))
    elif operator == "%" and isinstance(left, str):
        _check_percent("'%'", left)


def _wrap_filter(name: str, original: Callable[..., Any], check: Callable[[dict[str, Any]], None] | None) -> Any:
    """The filter `original`, its arguments checked by `check` (by parameter name) and its result bounded."""
    signature = inspect.signature(original)
    # Jinja's async-capable filters take an eval context their (sync) signature does not show: skip it.
    first = next(iter(signature.parameters), "")
    skip = 1 if getattr(original, "jinja_pass_arg", None) is not None and first not in _CONTEXT_NAMES else 0

    @wraps(original)
    def bounded_filter(*args: Any, **kwargs: Any) -> Any:
        if check is not None:
            bound = signature.bind(*args[skip:], **kwargs)
            bound.apply_defaults()
            check(bound.arguments)
        return _bounded(f"the filter {name}", original(*args, **kwargs))

    return bounded_filter


def _text(arguments: dict[str, Any], name: str) -> str:
    """An argument as the string the filter will make of it."""
    value = arguments[name]
    return value if isinstance(value, str) else str(value)


def _check_indent(a: dict[str, Any]) -> None:
    width = a["width"]
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    _refuse_number("indent", pad)
    text = _text(a, "s")
    _refuse_size("indent", len(text) + (text.count("\n") + 2) * pad)


def _check_wordwrap(a: dict[str, Any]) -> None:
    text, width = _text(a, "s"), a["width"]
    if isinstance(width, int) and width > 0:
        lines = len(text) // width + text.count("\n") + 1
        _refuse_size("wordwrap", len(text) + lines * len(a["wrapstring"] or "\n"))


_FILTER_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "center": lambda a: _refuse_number("center", a["width"]),
    "indent": _check_indent,
    "wordwrap": _check_wordwrap,
    "batch": lambda a: _refuse_number("batch", a["linecount"]),
    "slice": lambda a: _refuse_number("slice", a["slices"]),
    "round": lambda a: _refuse_number("round", a["precision"], 1_000),
    "format": lambda a: _check_percent("the filter format", _text(a, "value")),
    "replace": lambda a: _refuse_size("replace", _replaced_size(_text(a, "s"), str(a["old"]), str(a["new"]),
                                                               a["count"])),
}


@pass_environment
def _join_filter(env: Environment, value: Iterable[Any], d: str = "", attribute: str | int | None = None) -> str:
    """Jinja's `join` (templates render without autoescape), bounded as it goes."""
    if attribute is not None:
        value = map(make_attrgetter(env, attribute), value)
    return bounded_join(str(d), value)


class _BoundedNamespace(Namespace):
    """`namespace()`: attributes set in loops (`{% set ns.x = ns.x ~ ns.x %}`) stay within MAX_VALUE."""

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, _bounded(f"setting namespace attribute {name}", value))


def _check_str_method(method: types.BuiltinMethodType, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a str method call whose result would be too large, from its arguments."""
    text, name = method.__self__, method.__name__
    assert isinstance(text, str)
    first = args[0] if args else kwargs.get("width", kwargs.get("tabsize"))
    if name in ("center", "ljust", "rjust", "zfill"):
        _refuse_number(f".{name}()", first)
    elif name == "expandtabs":
        _refuse_size(".expandtabs()", len(text) + text.count("\t") * (first if isinstance(first, int) else 8))
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = args[2] if len(args) > 2 else kwargs.get("count")
        _refuse_size(".replace()", _replaced_size(text, args[0], args[1], count if isinstance(count, int) else None))


@pass_context
def _never_run(*args: Any, **kwargs: Any) -> Any:
    """A filter of the reading-only sandbox: it has the name, and is never run (see PromptSandbox)."""
    raise SecurityError("this sandbox only reads templates; render them in the rendering worker")


class PromptSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, strict about missing variables, with every size-making step bounded (see module).

    With `runs=False` it only reads templates (parse, variables): Jinja's compiler runs filters whose arguments
    are constants while it compiles, so reading a template with the real filters would run them in the caller's
    process; here the filters keep their names but are marked as needing a context, which Jinja never folds.
    """

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *, runs: bool = True) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True,
                         keep_trailing_newline=False)
        self.globals["namespace"] = _BoundedNamespace
        self.globals.pop("lipsum", None)  # lorem ipsum of any length: nothing a prompt needs
        for name, original in list(self.filters.items()):
            self.filters[name] = _wrap_filter(name, original, _FILTER_CHECKS.get(name)) if runs else _never_run
        self.filters["join"] = _wrap_filter("join", _join_filter, None) if runs else _never_run
        if not runs:
            self.tests = dict.fromkeys(self.tests, _never_run)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """`left operator right`, refused first when the result would be too large."""
        _binop(operator, left, right)
        return _bounded(f"'{operator}'", super().call_binop(context, operator, left, right))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """A call from the template: size arguments of str methods checked first, the result bounded."""
        wrapped = getattr(obj, "__wrapped__", None)  # str.format, as the sandbox wraps it
        if isinstance(wrapped, types.BuiltinMethodType) and isinstance(wrapped.__self__, str):
            _check_format(wrapped.__self__)
        if isinstance(obj, types.BuiltinMethodType) and isinstance(obj.__self__, str):
            if obj.__name__ == "join" and len(args) == 1 and not kwargs:
                return bounded_join(obj.__self__, args[0])
            _check_str_method(obj, args, kwargs)
        name = getattr(obj, "__name__", type(obj).__name__)
        return _bounded(f"calling {name}", super().call(context, obj, *args, **kwargs))
