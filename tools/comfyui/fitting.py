"""Fit generation values to one workflow: only the inputs it has, a size it accepts, the steps and CFG it is tuned for.

`fit_params(template, params)` returns values that `check_values` / `render` accept (and the ledger's planning,
given the same server caps), with one short note per change for the person. The rules, in order:

1. **Only what the workflow takes.** A value with no bound input is left out: negative prompt, CFG, denoise, steps,
   seed, batch size, width, height ("no negative prompt: qwen-image has no input for it"). The prompt is kept (a
   workflow without one ignores it) and so is an input image (leaving it out would change what is made; the
   planning checks refuse it with the fix).
2. **Tuned defaults.** Steps and CFG the caller left unset take the catalog's `recommended_steps` /
   `recommended_cfg` when the workflow has that input (not noted: nothing the caller asked for changed).
3. **Numbers within limits.** Steps, CFG, denoise, batch size and seed are brought within the sidecar's `limits`
   (min, max, and `multiple_of` for whole numbers); steps also within the catalog's `max_steps` and the caller's
   `max_steps` (the server's ATELIER_MAX_STEPS), batch size within `max_batch_size` likewise (also the workflow's
   own batch size, when it is an input and more than that allows).
4. **A size it accepts, with the design's aspect ratio** (when the workflow takes width and height and both are
   set). Each side must be a multiple of the least common multiple of 8, the catalog's `resolution_multiple` and
   the sidecar's `multiple_of` for that side, within the sidecar's min/max for that side, and (with a catalog)
   width × height at most `max_resolution`'s pixel count.
   - When the catalog lists `native_resolutions`, the native size whose aspect ratio is closest to the design's is
     used (on a tie, the one whose pixel count is closest to the design's), rounded to the multiple, when its
     aspect ratio is within ~16 % of the design's; native sizes the rules above refuse are skipped. Without such a
     native size, the design is scaled (below) within the largest native size's pixel count.
   - Otherwise (or when none is allowed) the design's size is kept when allowed, else scaled (down to fit the
     pixel count and the maxima; up only to reach a minimum) and rounded to the multiples, choosing among the
     nearest multiples the size whose aspect ratio is closest (on a tie, the one nearest the scaled pixel count).
   A workflow that takes only one of width and height gets that side fitted alone (the other is left out).
5. Every change is one note, e.g. "size 1024×768 → 888×664 (txt2img takes at most 768x768 pixels)".

When no value can satisfy a workflow's limits (a min above its max, no multiple in range), FitError (a
WorkflowError) names the workflow, the value and the limit to fix in its sidecar.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from atelier.tools.comfyui.binding_inference import current_value
from atelier.tools.comfyui.template_models import Limit, WorkflowTemplate
from atelier.tools.errors import WorkflowError
from atelier.tools.schemas import GenerationParams, parse_size

__all__ = ["FitError", "Fitted", "fit_params"]

_NATIVE_ASPECT_TOLERANCE = 0.15  # |log(aspect ratio)| (~16 %): a native size further off changes the picture

# How the notes name each parameter.
_WORDS = {"negative": "negative prompt", "seed": "seed", "steps": "steps", "cfg": "CFG", "width": "width",
          "height": "height", "denoise": "denoise", "batch_size": "batch size"}
# Parameters fitted as numbers against the sidecar's limits (width and height are fitted as a size).
_NUMBERS = ("steps", "cfg", "denoise", "batch_size", "seed")
_SIDE_RANGE = (16, 16384)  # what GenerationParams accepts for width and height


class FitError(WorkflowError):
    """No value satisfies a workflow's limits (its sidecar contradicts itself)."""


@dataclass(frozen=True)
class Fitted:
    """Values the workflow takes, and one note per change made to get there."""

    params: GenerationParams
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Side:
    """What one side (width or height) must be: a multiple of `multiple` within low..high."""

    multiple: int
    low: int
    high: int

    def allows(self, value: int) -> bool:
        """Whether `value` is a valid length for this side."""
        return value % self.multiple == 0 and self.low <= value <= self.high

    def nearest(self, value: float) -> list[int]:
        """The valid lengths just below and above `value` (clamped into range), nearest first."""
        down = math.floor(value / self.multiple) * self.multiple
        found = {min(max(v, self.low), self.high) for v in (down, down + self.multiple)}
        return sorted((v for v in found if self.allows(v)), key=lambda v: abs(v - value))


def fit_params(template: WorkflowTemplate, params: GenerationParams, *, max_steps: int | None = None,
               max_batch_size: int | None = None) -> Fitted:
    """Values `template` takes (see the module docstring for the rules) and a note for each change.

    `max_steps` / `max_batch_size` are the server's caps (ATELIER_MAX_STEPS, ATELIER_MAX_BATCH_SIZE) when known.
    """
    values = params.model_dump()
    notes: list[str] = []
    dropped = [p for p in _WORDS if values.get(p) is not None and p not in template.bindings]
    if dropped:
        names = [_WORDS[p] for p in dropped]
        listed = ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]
        notes.append(f"no {listed}: {template.name} has no input for {'them' if len(names) > 1 else 'it'}")
        for param in dropped:
            values[param] = None
    entry = template.catalog
    if entry is not None:
        if values["steps"] is None and "steps" in template.bindings and entry.recommended_steps is not None:
            values["steps"] = entry.recommended_steps
        if values["cfg"] is None and "cfg" in template.bindings and entry.recommended_cfg is not None:
            values["cfg"] = entry.recommended_cfg
    caps = {"steps": _lowest(max_steps, entry.max_steps if entry else None),
            "batch_size": _lowest(max_batch_size, entry.max_batch_size if entry else None)}
    own_batch = current_value(template.graph, template.bindings["batch_size"][0]) if (
        values["batch_size"] is None and "batch_size" in template.bindings) else None
    if isinstance(own_batch, int) and caps["batch_size"] is not None and own_batch > caps["batch_size"]:
        values["batch_size"] = caps["batch_size"]
        notes.append(f"batch size {own_batch} → {caps['batch_size']} (at most {caps['batch_size']} per job)")
    for param in _NUMBERS:
        if values[param] is not None:
            values[param] = _fit_number(template, param, values[param], caps.get(param), notes)
    _fit_size(template, values, notes)
    return Fitted(params=GenerationParams.model_validate(values), notes=tuple(notes))


def _lowest(*caps: int | None) -> int | None:
    """The lowest of the caps that are set."""
    known = [c for c in caps if c is not None]
    return min(known) if known else None


def _fit_number(template: WorkflowTemplate, param: str, value: Any, cap: int | None, notes: list[str]) -> Any:
    """`value` within the sidecar's limit for `param` and `cap`, noting a change."""
    limit = template.limits.get(param) or Limit()
    high = limit.max if cap is None else (cap if limit.max is None else min(limit.max, cap))
    low = limit.min
    if isinstance(value, float):
        fitted: Any = min(max(value, low if low is not None else value), high if high is not None else value)
    else:
        step = limit.multiple_of or 1
        first = math.ceil(low / step) * step if low is not None else None
        last = math.floor(high / step) * step if high is not None else None
        if first is not None and last is not None and first > last:
            raise FitError(f"workflow '{template.name}' takes no {_WORDS[param]}: its limits allow none "
                           f"({_range(low, high)}{f', a multiple of {step}' if step > 1 else ''}); "
                           f"fix `limits.{param}` in its .meta.json")
        fitted = round(value / step) * step
        fitted = min(max(fitted, first if first is not None else fitted), last if last is not None else fitted)
    if fitted != value:
        notes.append(f"{_WORDS[param]} {value:g} → {fitted:g} ({template.name} takes {_range(low, high)})")
    return fitted


def _range(low: float | None, high: float | None) -> str:
    """A range in words: `low..high`, `at least low` or `at most high`."""
    return f"{low:g}..{high:g}" if low is not None and high is not None else (
        f"at least {low:g}" if low is not None else f"at most {high:g}" if high is not None else "any value")


def _side(template: WorkflowTemplate, param: str) -> _Side:
    """The rule one side of the image must follow in `template` (FitError when no length can)."""
    limit = template.limits.get(param) or Limit()
    multiple = math.lcm(8, template.catalog.resolution_multiple if template.catalog else 8, limit.multiple_of or 1)
    low = max(_SIDE_RANGE[0], math.ceil(limit.min) if limit.min is not None else 0)
    high = min(_SIDE_RANGE[1], math.floor(limit.max) if limit.max is not None else _SIDE_RANGE[1])
    side = _Side(multiple, math.ceil(low / multiple) * multiple, math.floor(high / multiple) * multiple)
    if side.low > side.high:
        raise FitError(f"workflow '{template.name}' takes no {param}: a multiple of {multiple} within "
                       f"{_range(limit.min, limit.max)} does not exist; fix `limits.{param}` or the catalog's "
                       "`resolution_multiple` in its .meta.json")
    return side


def _fit_size(template: WorkflowTemplate, values: dict[str, Any], notes: list[str]) -> None:
    """Width and height the workflow accepts, with the design's aspect ratio (rule 4), noting a change."""
    width, height = values["width"], values["height"]
    if width is None and height is None:
        return
    if width is None or height is None:  # one side alone (the other is unset or not an input)
        param = "width" if width is not None else "height"
        side = _side(template, param)
        fitted = side.nearest(values[param])[0]
        if fitted != values[param]:
            notes.append(f"{param} {values[param]} → {fitted} ({template.name} takes a multiple of {side.multiple} "
                         f"in {side.low}..{side.high})")
        values[param] = fitted
        return
    sides = (_side(template, "width"), _side(template, "height"))
    pixels = template.catalog.max_pixels if template.catalog is not None else None

    def allowed(size: tuple[int, int]) -> bool:
        """Whether render would take this size."""
        fits_sides = sides[0].allows(size[0]) and sides[1].allows(size[1])
        return fits_sides and (pixels is None or size[0] * size[1] <= pixels)

    size = _native(template, (width, height), allowed)
    why = f"a native size of {template.name}"
    if size is None:  # no native size has the design's aspect ratio: scale within the trained pixel count
        why = _limits_text(template, sides)
        natives = _native_pixels(template)
        budget = natives if pixels is None else pixels if natives is None else min(pixels, natives)
        if natives is not None and budget == natives:
            why = f"{template.name} is trained at {natives:,} pixels"
        size = (width, height) if allowed((width, height)) and (budget is None or width * height <= budget) \
            else _scaled((width, height), sides, budget, allowed)
    if size is None:
        raise FitError(f"workflow '{template.name}' takes no size near {width}x{height} ({why}); "
                       "fix `limits` or `max_resolution` in its .meta.json")
    if size != (width, height):
        notes.append(f"size {width}×{height} → {size[0]}×{size[1]} ({why})")
    values["width"], values["height"] = size


def _aspect_error(size: tuple[int, int], ratio: float) -> float:
    """How far a size's aspect ratio is from `ratio` (the same for wide and tall), to 3 decimals."""
    return round(abs(math.log(size[0] / size[1] / ratio)), 3)


def _native(template: WorkflowTemplate, wanted: tuple[int, int],
            allowed: Callable[[tuple[int, int]], bool]) -> tuple[int, int] | None:
    """The allowed native size closest to `wanted`'s aspect ratio (then pixel count); None without one."""
    entry = template.catalog
    if entry is None or not entry.native_resolutions:
        return None
    sides = (_side(template, "width"), _side(template, "height"))
    candidates = []
    for text in entry.native_resolutions:
        native = parse_size(text)
        size = (sides[0].nearest(native[0])[0], sides[1].nearest(native[1])[0])  # on the multiples
        if allowed(size):
            candidates.append(size)
    if not candidates:
        return None
    ratio, area = wanted[0] / wanted[1], wanted[0] * wanted[1]
    best = min(candidates, key=lambda s: (_aspect_error(s, ratio), abs(s[0] * s[1] - area)))
    return best if _aspect_error(best, ratio) <= _NATIVE_ASPECT_TOLERANCE else None


def _native_pixels(template: WorkflowTemplate) -> int | None:
    """The largest native size's pixel count (what the model was trained at), None without native sizes."""
    entry = template.catalog
    if entry is None or not entry.native_resolutions:
        return None
    return max(w * h for w, h in map(parse_size, entry.native_resolutions))


def _scaled(wanted: tuple[int, int], sides: tuple[_Side, _Side], pixels: int | None,
            allowed: Callable[[tuple[int, int]], bool]) -> tuple[int, int] | None:
    """`wanted` scaled into the sides' ranges and the pixel count, on the multiples, its aspect ratio kept closest."""
    width, height = wanted
    ratio = width / height
    scale = min(1.0, sides[0].high / width, sides[1].high / height)
    if pixels is not None:
        scale = min(scale, math.sqrt(pixels / (width * height)))
    scale = max(scale, sides[0].low / width, sides[1].low / height)
    target, area = width * scale, width * height * scale * scale
    # The nearest multiples first; then a multiple narrower at a time, when rounding up broke the pixel count.
    for step in range(64):
        options = [(w, h) for w in sides[0].nearest(target - step * sides[0].multiple)
                   for h in sides[1].nearest(w / ratio)]
        fitting = [size for size in options if allowed(size)]
        if fitting:
            return min(fitting, key=lambda s: (_aspect_error(s, ratio), abs(s[0] * s[1] - area)))
    return None


def _limits_text(template: WorkflowTemplate, sides: tuple[_Side, _Side]) -> str:
    """What bounds the workflow's size, in words, e.g. 'txt2img takes at most 768x768 pixels, sides in multiples
    of 8'."""
    parts = []
    if template.catalog is not None:
        parts.append(f"at most {template.catalog.max_resolution} pixels")
    for name, side in zip(("width", "height"), sides, strict=True):
        if side.low > _SIDE_RANGE[0] or side.high < _SIDE_RANGE[1] - _SIDE_RANGE[1] % side.multiple:
            parts.append(f"{name} {side.low}..{side.high}")
    multiples = sorted({side.multiple for side in sides})
    if multiples != [8] or not parts:
        parts.append("sides in multiples of " + " and ".join(str(m) for m in multiples))
    return f"{template.name} takes " + ", ".join(parts)
