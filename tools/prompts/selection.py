"""Which prompt (and workflow) an image gets: the running A/B test for its purpose, else the best-rated prompt."""

from __future__ import annotations

from atelier.tools.prompts.abtests import ABTests, assign_variant
from atelier.tools.prompts.library import PromptLibrary
from atelier.tools.prompts.models import ChosenPrompt, PromptVersion

__all__ = ["choose_prompt"]


async def choose_prompt(library: PromptLibrary, tests: ABTests, purpose: str, request_key: str, *,
                        for_owner: str | None = None) -> ChosenPrompt | None:
    """The A/B arm for this request when a test runs for `purpose`; else the library's best version; else None.

    With `for_owner`, only that person's own, admins' and operators' prompts and tests take part.
    """
    test = await tests.running_for(purpose, for_owner=for_owner)
    best = await library.best_for(purpose, for_owner=for_owner)
    if test is not None:
        variant = assign_variant(test.name, test.variants, request_key)
        version: PromptVersion | None
        if variant.prompt is not None and variant.version is not None:
            version = await library.version(variant.prompt, variant.version)
        else:
            version = best[0] if best else None
        return ChosenPrompt(version=version, workflow=variant.workflow, ab_test=test.name, variant=variant.label,
                            why=f"A/B test {test.name}, variant {variant.label} ({variant.describe()})")
    if best is None:
        return None
    version, stats = best
    rating = f"liked {stats.liked}/{stats.rated}" if stats.rated else "not rated yet"
    return ChosenPrompt(version=version, why=f"library prompt {version.ref} for {purpose} ({rating})")
