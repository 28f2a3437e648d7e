"""The Prompts tab's words, with no UI and no I/O: library and A/B rows, the report's verdict, the forms' parsing.

Everything a person typed is shown as text: table cells are plain text in Gradio's Dataframe, and what goes into
Markdown passes through `plain` first (HTML and Markdown marks escaped).
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from atelier.tools.errors import AtelierError
from atelier.tools.prompts.models import ABReport, ABTest, Prompt, PromptVersion, VersionStats

__all__ = ["LIBRARY_COLUMNS", "REPORT_COLUMNS", "TEST_COLUMNS", "FormError", "ab_rows", "library_rows", "parse_ref",
           "parse_values", "plain", "report_rows", "sentence", "split_weights", "validation_words", "values_text",
           "verdict_text", "version_choice"]

LIBRARY_COLUMNS = ["prompt", "v", "template", "negative", "by", "uses", "liked/rated", "avg ★", "created"]
TEST_COLUMNS = ["test", "status", "purpose", "arms", "min ratings", "by", "started", "stopped"]
REPORT_COLUMNS = ["arm", "what", "share", "uses", "rated", "liked", "avg ★", "P(best)"]

_REF = re.compile(r"^\s*([a-z0-9][a-z0-9._-]{0,63})@(\d{1,9})\s*$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Marks that make Markdown emphasis, code, links, headings or tables (a link needs its [ ], a list its line start).
_MARKDOWN = re.compile(r"([\\`*_\[\]#|~])")


class FormError(AtelierError):
    """What a form in the tab holds that cannot be used, in words that name the fix."""


def plain(text: str) -> str:
    """`text` for a Markdown component, shown as typed: no HTML, no emphasis, links or headings."""
    return _MARKDOWN.sub(r"\\\1", html.escape(text, quote=False))


def sentence(text: str) -> str:
    """`text` with its first letter capitalised (messages from the services start in lower case)."""
    return text[:1].upper() + text[1:]


def _when(stamp: datetime | None) -> str:
    """A timestamp to the minute, or "" when there is none."""
    return stamp.strftime("%Y-%m-%d %H:%M") if stamp is not None else ""


def library_rows(entries: Iterable[tuple[Prompt, list[PromptVersion], list[VersionStats]]]) -> list[list[str]]:
    """One row per version, newest version first within each prompt: its text, uses, likes and mean stars."""
    rows = []
    for prompt, versions, stats in entries:
        by_version = {s.version: s for s in stats}
        for version in sorted(versions, key=lambda v: -v.version):
            figures = by_version.get(version.version)
            uses = figures.uses if figures else 0
            liked = f"{figures.liked}/{figures.rated}" if figures and figures.rated else "—"
            stars = f"{figures.mean_stars:.2f}" if figures and figures.mean_stars is not None else "—"
            name = prompt.name + (f" ({prompt.purpose})" if prompt.purpose else "")
            rows.append([name, str(version.version), version.template, version.negative, prompt.author, str(uses),
                         liked, stars, _when(version.created_at)])
    return rows


def version_choice(version: PromptVersion) -> tuple[str, str]:
    """A (label, value) pair for a version picker: `name@version — the template's start`."""
    start = " ".join(version.template.split())
    start = start if len(start) <= 48 else start[:47] + "…"
    return f"{version.ref} — {start}", version.ref


def parse_ref(ref: str | None) -> tuple[str, int]:
    """(name, version) from `name@version`; FormError saying how to pick one otherwise."""
    match = _REF.match(ref or "")
    if match is None:
        shown = (ref or "").strip()[:80]
        raise FormError(f"'{shown}' is not a prompt version: pick one from the list (name@version, e.g. hero@2)"
                        if shown else "no prompt version picked: pick one from the list (name@version, e.g. hero@2)")
    return match.group(1), int(match.group(2))


def parse_values(text: str, what: str = "Values") -> dict[str, Any]:
    """`name = value` lines as a dict (blank lines and `#` comments skipped); a value in [ ] or { } is JSON."""
    values: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, raw = line.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not _VARIABLE.match(name):
            raise FormError(f"{what}, line {number} ('{line.strip()[:40]}') is not `name = value`: write one "
                            "variable per line, e.g. subject = a red kettle")
        if raw[:1] in "[{" and raw:
            try:
                values[name] = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                why = exc.msg if isinstance(exc, json.JSONDecodeError) else "it nests too deeply"
                raise FormError(f"{what}, line {number}: {name}'s value starts like JSON but is not ({why}); "
                                "write a list as [\"a\", \"b\"] or leave out the brackets") from exc
        else:
            values[name] = raw
    return values


def values_text(variables: Iterable[str], defaults: Mapping[str, Any]) -> str:
    """The values box for a version: one `name = default` line per variable it reads (empty when it has none)."""
    lines = []
    for name in variables:
        value = defaults.get(name, "")
        lines.append(f"{name} = {value if isinstance(value, str) else json.dumps(value)}")
    return "\n".join(lines)


def split_weights(percent_a: float | None) -> tuple[int, int]:
    """The two arms' weights for "A gets `percent_a` % of requests" (1–99), in lowest terms: 50 → (1, 1)."""
    if percent_a is None or not math.isfinite(percent_a) or not 1 <= percent_a <= 99:
        raise FormError(f"the split gives A {percent_a}% of requests; choose 1–99 % (B gets the rest)")
    a = round(percent_a)
    common = math.gcd(a, 100 - a)
    return a // common, (100 - a) // common


def _share(weight: int, total: int) -> str:
    """A weight as a share of requests."""
    return f"{100 * weight / total:.0f}%" if total else "—"


def ab_rows(tests: Iterable[ABTest]) -> list[list[str]]:
    """One row per test: its state, where it applies, its arms with their shares, who started it and when."""
    rows = []
    for test in tests:
        total = sum(v.weight for v in test.variants)
        arms = " · ".join(f"{v.label}: {v.describe()} ({_share(v.weight, total)})" for v in test.variants)
        rows.append([test.name, test.status, test.purpose or "—", arms, str(test.min_ratings), test.author,
                     _when(test.created_at), _when(test.stopped_at)])
    return rows


def report_rows(report: ABReport) -> list[list[str]]:
    """Each arm's line of the report: uses, ratings, likes, mean stars and its probability of being best."""
    total = sum(v.weight for v in report.variants)
    return [[v.label, v.arm, _share(v.weight, total), str(v.uses), str(v.rated),
             f"{v.liked} ({v.like_rate:.0%})" if v.like_rate is not None else "—",
             f"{v.mean_stars:.2f}" if v.mean_stars is not None else "—", f"{v.p_best:.3f}"]
            for v in report.variants]


def verdict_text(report: ABReport) -> str:
    """The report's significance in words, as the statistics state it (Markdown)."""
    if report.significant:
        headline = f"**Significant**: {report.leader} is better"
    elif report.status == "running":
        headline = "**Not significant yet**"
    else:
        headline = "**Not significant** (the test is stopped)"
    p_best = ", ".join(f"{v.label} {v.p_best:.3f}" for v in report.variants)
    if report.p_value is not None and report.chi2 is not None:
        chi = f"Chi-square, for reference: χ² = {report.chi2:.3f}, p = {report.p_value:.4f}."
    else:
        chi = "Chi-square, for reference: not defined yet (it needs liked and not-liked images among the ratings)."
    purpose = f" for purpose {report.purpose}" if report.purpose else ""
    return "\n\n".join([
        f"#### {plain(report.test)} ({report.status}{plain(purpose)})",
        f"{headline}. {plain(sentence(report.recommendation))}",
        f"P(best): {plain(p_best)}. {plain(chi)}",
        f"<small>{plain(report.method)}</small>",
    ])


def validation_words(exc: ValidationError, labels: Mapping[str, str]) -> str:
    """A pydantic refusal of a form as sentences naming each field (by its label in the tab) and the fix."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        label = labels.get(field, field or "the form")
        ctx = error.get("ctx") or {}
        given = error.get("input")
        if error["type"] == "string_too_long":
            size = len(given) if isinstance(given, str) else "too many"
            problems.append(f"{label} has {size} characters; keep it to {ctx.get('max_length')} or fewer")
        elif error["type"] == "string_too_short":
            problems.append(f"{label} is empty; fill it in")
        elif error["type"] in {"greater_than_equal", "less_than_equal"}:
            bound = ctx.get("ge", ctx.get("le"))
            problems.append(f"{label} is {given}; it must be {'at least' if 'ge' in ctx else 'at most'} {bound}")
        else:
            problems.append(f"{label}: {str(error['msg']).removeprefix('Value error, ')}")
    return "; ".join(problems)
