"""What the Prompts tab's controls do: read the caller's library and A/B tests, save, render, start, stop, report.

Locally everything is the operator's; with accounts a person sees and changes only their own prompts and tests
(an admin: everyone's), and another person's is answered as if it did not exist. Forms are checked as the job API
checks them (PromptDraft, ABTestDraft, text PostgreSQL can store); a refusal comes back as the tab's note, in
words, and leaves the form as typed. Templates render in the sandboxed worker within ATELIER_TEMPLATE_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import Any

import gradio as gr
from pydantic import ValidationError

from atelier.chat.prompts_view import (
    FormError,
    ab_rows,
    library_rows,
    parse_ref,
    parse_values,
    plain,
    report_rows,
    sentence,
    split_weights,
    validation_words,
    values_text,
    verdict_text,
    version_choice,
)
from atelier.chat.runtime import ChatRuntime
from atelier.studio import ChatServices
from atelier.tools.accounts.models import Principal
from atelier.tools.errors import AtelierError
from atelier.tools.prompts.abtests import ABTestNotFoundError
from atelier.tools.prompts.library import NotTheAuthorError, PromptNotFoundError
from atelier.tools.prompts.models import NAME_PATTERN, ABTest, ABTestDraft, Prompt, PromptDraft, VariantSpec
from atelier.tools.schemas import check_storable

__all__ = ["PromptActions"]

_LABELS = {"name": "Name", "template": "Template", "negative": "Negative prompt", "defaults": "Defaults",
           "purpose": "Purpose", "description": "Description", "note": "Note", "variants": "Arms",
           "min_ratings": "Ratings per arm"}


def _text(value: str | None) -> str:
    """A text box's value ("" for the null an API client may send)."""
    return value or ""


def _refused(action: str, exc: Exception) -> str:
    """The note for a refused action: what was not done and why (escaped: it may quote what was typed)."""
    words = validation_words(exc, _LABELS) if isinstance(exc, ValidationError) else str(exc)
    return f"**{action}.** {plain(sentence(words))}"


@dataclass(frozen=True)
class _Scope:
    """One click's caller and what they see: `only` their own prompts and tests, or everyone's when None."""

    services: ChatServices
    me: Principal
    only: str | None

    async def prompt(self, name: str) -> Prompt:
        """A prompt the caller sees (PromptNotFoundError for one that is not there or not theirs)."""
        try:
            found = await self.services.ledger.prompts.get(name)
        except PromptNotFoundError:
            found = None
        if found is None or (self.only is not None and found.author != self.only):
            raise PromptNotFoundError(f"no prompt named '{name}' of yours; the library table lists yours")
        return found

    async def name_free(self, name: str) -> None:
        """Refuse a name another person's prompt has (without saying whose: the API's 403 would)."""
        try:
            found = await self.services.ledger.prompts.get(name)
        except PromptNotFoundError:
            return
        if self.only is not None and found.author != self.only:
            raise FormError(f"the name '{name}' is taken by someone else's prompt; choose another name")

    async def test(self, name: str | None) -> ABTest:
        """An A/B test the caller sees (ABTestNotFoundError otherwise)."""
        wanted = _text(name).strip()
        if not wanted:
            raise FormError("no A/B test picked: pick one from the Test list")
        found = None
        if re.fullmatch(NAME_PATTERN, wanted):  # anything else names no test (and never reaches the database)
            with contextlib.suppress(ABTestNotFoundError):
                found = await self.services.ledger.abtests.get(wanted)
        if found is None or (self.only is not None and found.author != self.only):
            raise ABTestNotFoundError(f"no A/B test named '{wanted[:80]}' of yours; the tests table lists yours")
        return found

    async def library(self) -> list[list[str]]:
        """The library table: each of the caller's prompts, every version with its figures."""
        prompts = self.services.ledger.prompts
        return library_rows([(p, await prompts.history(p.name), await prompts.stats(p.name))
                             for p in await prompts.search(author=self.only)])

    async def tests(self) -> list[ABTest]:
        """The caller's A/B tests, newest first."""
        return await self.services.ledger.abtests.all(author=self.only)

    async def arm(self, label: str, ref: str | None, workflow: str | None, weight: int) -> VariantSpec:
        """One arm of a new test: a version of the caller's (checked), a workflow, or both."""
        if not (ref or "").strip() and not workflow:
            raise FormError(f"arm {label}: pick a prompt version, a workflow, or both")
        name, number = parse_ref(ref) if (ref or "").strip() else (None, None)
        if name is not None:
            await self.prompt(name)
        return VariantSpec(label=label, prompt=name, version=number, workflow=workflow or None, weight=weight)


class PromptActions:
    """What the Prompts tab's controls do, on one runtime (each action first asks who is calling)."""

    def __init__(self, runtime: ChatRuntime) -> None:
        self.runtime = runtime

    async def scope(self, request: gr.Request | None) -> _Scope:
        """The caller and what they see: locally and for admins everything, else their own."""
        services = await self.runtime.get()
        me = await self.runtime.caller(request)
        return _Scope(services, me, None if not self.runtime.accounts or me.is_admin else me.user_id)

    async def library(self, request: gr.Request) -> list[list[str]]:
        """/prompt_library: the caller's prompts, one row per version."""
        return await (await self.scope(request)).library()

    async def tests(self, request: gr.Request) -> list[list[str]]:
        """/ab_tests: the caller's A/B tests."""
        return ab_rows(await (await self.scope(request)).tests())

    async def pickers(self, request: gr.Request) -> tuple[Any, Any, Any, Any]:
        """The choices of the version pickers (render, arm A, arm B) and of the test picker."""
        scope = await self.scope(request)
        prompts = scope.services.ledger.prompts
        versions = [version_choice(v) for p in await prompts.search(author=scope.only)
                    for v in reversed(await prompts.history(p.name))]
        arms = [("none: the workflow alone", ""), *versions]
        tests = [t.name for t in await scope.tests()]
        return (gr.update(choices=versions), gr.update(choices=arms), gr.update(choices=arms),
                gr.update(choices=tests))

    async def save(self, name: str | None, template: str | None, negative: str | None, defaults: str | None,
                   purpose: str | None, description: str | None, note: str | None,
                   request: gr.Request) -> tuple[Any, str]:
        """/save_prompt: a new prompt, or a new version of one of the caller's (an unchanged one saves nothing)."""
        scope = await self.scope(request)
        try:
            fields = {"name": _text(name).strip(), "template": template, "negative": negative or None,
                      "defaults": parse_values(_text(defaults), "Defaults") or None,
                      "purpose": _text(purpose).strip() or None, "description": _text(description).strip() or None,
                      "note": _text(note)}
            for key, value in fields.items():
                check_storable(value, _LABELS[key])
            draft = await asyncio.to_thread(PromptDraft.model_validate, fields)  # parsing a 20 000-character one
            await scope.name_free(draft.name)
            saved = await scope.services.ledger.prompts.save(draft, author=scope.me.user_id, admin=scope.me.is_admin)
        except NotTheAuthorError:  # made by someone else between the check and the save
            return gr.skip(), _refused("Not saved", FormError(f"the name '{_text(name).strip()}' is taken by someone "
                                                              "else's prompt; choose another name"))
        except (AtelierError, ValidationError, ValueError) as exc:
            return gr.skip(), _refused("Not saved", exc)
        ref = saved.version.ref
        said = f"Saved **{plain(ref)}**." if saved.created else f"Nothing changed: **{plain(ref)}** is the newest."
        return await scope.library(), said

    async def variables(self, ref: str | None, request: gr.Request) -> tuple[Any, str]:
        """The values box for the picked version: its variables, filled with its defaults."""
        scope = await self.scope(request)
        try:
            name, number = parse_ref(ref)
            await scope.prompt(name)
            version = await scope.services.ledger.prompts.version(name, number)
            names = await asyncio.to_thread(version.variable_names)
        except AtelierError as exc:
            return gr.skip(), _refused("Cannot render it", exc)
        reads = ", ".join(names) if names else "no variables"
        return values_text(names, version.defaults), f"{plain(version.ref)} reads {plain(reads)}."

    async def render(self, ref: str | None, values: str | None, request: gr.Request) -> tuple[str, str]:
        """/render_prompt: the picked version's text for these values, from the sandboxed renderer."""
        scope = await self.scope(request)
        try:
            name, number = parse_ref(ref)
            await scope.prompt(name)
            version = await scope.services.ledger.prompts.version(name, number)
            given = parse_values(_text(values))
            check_storable(given, "Values")
            text = await version.render_async(given, seconds=self.runtime.settings.template_seconds)
        except (AtelierError, ValueError) as exc:
            return "", _refused("Not rendered", exc)
        negative = f" Its negative prompt: {plain(version.negative)}" if version.negative else ""
        return text, f"Rendered **{plain(version.ref)}** ({len(text)} characters).{negative}"

    async def start(self, name: str | None, arm_a: str | None, workflow_a: str | None, arm_b: str | None,
                    workflow_b: str | None, split: float | None, purpose: str | None, min_ratings: float | None,
                    request: gr.Request) -> tuple[Any, str]:
        """/start_ab_test: a running test of two arms, split as asked, optionally for the designer's purpose."""
        scope = await self.scope(request)
        try:
            weight_a, weight_b = split_weights(split)
            fields = {"name": _text(name).strip(), "purpose": _text(purpose).strip() or None,
                      "variants": [await scope.arm("A", arm_a, workflow_a, weight_a),
                                   await scope.arm("B", arm_b, workflow_b, weight_b)],
                      "min_ratings": int(min_ratings) if min_ratings is not None else 0}
            check_storable({"name": fields["name"], "purpose": fields["purpose"]}, "the test")
            draft = ABTestDraft.model_validate(fields)
            test = await scope.services.ledger.abtests.create(draft.name, draft.variants, scope.me.user_id,
                                                              purpose=draft.purpose, min_ratings=draft.min_ratings)
        except (AtelierError, ValidationError, ValueError) as exc:
            return gr.skip(), _refused("Not started", exc)
        return ab_rows(await scope.tests()), f"Started **{plain(test.name)}**: {plain(ab_rows([test])[0][3])}."

    async def stop(self, name: str | None, request: gr.Request) -> tuple[Any, str]:
        """/stop_ab_test: one of the caller's tests assigns no more arms (its data and report stay)."""
        scope = await self.scope(request)
        try:
            test = await scope.test(name)
            stopped = await scope.services.ledger.abtests.stop(test.name, scope.me.user_id, admin=scope.me.is_admin)
        except AtelierError as exc:
            return gr.skip(), _refused("Not stopped", exc)
        return ab_rows(await scope.tests()), f"Stopped **{plain(stopped.name)}**; its report stays."

    async def report(self, name: str | None, request: gr.Request) -> tuple[list[list[str]], str]:
        """/ab_report: each arm's uses, ratings and P(best), and the significance the statistics state."""
        scope = await self.scope(request)
        try:
            report = await scope.services.ledger.abtests.report((await scope.test(name)).name)
        except AtelierError as exc:
            return [], _refused("No report", exc)
        return report_rows(report), verdict_text(report)
