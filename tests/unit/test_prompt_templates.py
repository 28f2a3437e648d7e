"""Prompt templates in the sandbox, the A/B statistics against hand-computed cases, and deterministic assignment."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime

import pytest
from scipy.special import betaln

from atelier.agents.cost_router import choose_route
from atelier.agents.planner import Brief
from atelier.agents.visual_designer import BASE_NEGATIVE, design_image
from atelier.tools.prompts.abtests import assign_variant
from atelier.tools.prompts.models import ChosenPrompt, PromptDraft, PromptVersion, Variant
from atelier.tools.prompts.rendering import render_template
from atelier.tools.prompts.significance import Outcome, chi_square, decide, probability_best
from atelier.tools.prompts.templating import PromptTemplateError, template_variables


def _version(template: str, negative: str = "", defaults: dict[str, object] | None = None) -> PromptVersion:
    return PromptVersion(prompt="hero-product", version=3, template=template, negative=negative,
                         defaults=defaults or {}, note="", author="t", created_at=datetime.now(UTC))


def test_variables_and_rendering() -> None:
    template = "{{ subject }}, {% if mood %}{{ mood }} mood, {% endif %}{{ light | default('soft light') }}"
    assert template_variables(template) == ["light", "mood", "subject"]
    text = render_template(template, {"subject": "a red kettle", "mood": "calm", "light": "rim light"})
    assert text == "a red kettle, calm mood, rim light"
    assert render_template("{{ a }}  \n\n {{ b }}", {"a": "x"}, defaults={"b": "y"}) == "x y"


def test_missing_variables_are_named_with_the_fix() -> None:
    with pytest.raises(PromptTemplateError, match=r"needs a value for lens, subject.*--var lens=\.\.\."):
        render_template("{{ subject }} shot on {{ lens }}", {})


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ subject.__class__.__init__.__globals__ }}",
    "{% set x = [] %}{{ x.append(1) }}",
])
def test_the_sandbox_refuses_python_internals_and_mutation(template: str) -> None:
    with pytest.raises(PromptTemplateError, match=r"sandbox forbids|reads something"):
        render_template(template, {"subject": "s"})


def test_bad_templates_fail_at_save_time() -> None:
    with pytest.raises(PromptTemplateError, match=r"not valid Jinja2 \(line 1\)"):
        template_variables("{{ subject ")
    with pytest.raises(ValueError, match="not a valid prompt name"):
        PromptDraft(name="Hero Product!", template="{{ subject }}")
    with pytest.raises(PromptTemplateError, match="is empty"):
        PromptDraft(name="ok", template="   ")


def test_probability_best_matches_a_hand_computed_case() -> None:
    # A: 0 of 1 liked → Beta(1, 2); B: 1 of 1 → Beta(2, 1). P(B > A) = ∫ 2(1−x)(1−x²) dx = 2(1 − 1/2 − 1/3 + 1/4) = 5/6.
    p_a, p_b = probability_best([Outcome("A", 1, 0), Outcome("B", 1, 1)])
    assert p_b == pytest.approx(5 / 6, abs=1e-6) and p_a == pytest.approx(1 / 6, abs=1e-6)


def _exact_two(a: Outcome, b: Outcome) -> float:
    """P(B > A) by Evan Miller's closed form for integer Beta parameters (an independent method)."""
    (a1, b1), (a2, b2) = a.posterior(), b.posterior()
    return sum(math.exp(betaln(a1 + i, b1 + b2) - math.log(b2 + i) - betaln(1 + i, b2) - betaln(a1, b1))
               for i in range(int(a2)))


def test_the_report_for_30_of_50_against_20_of_50() -> None:
    a, b = Outcome("A", 50, 30), Outcome("B", 50, 20)
    # Chi-square by hand: pooled rate 50/100, every expected cell 25, each |O − E| = 5 → 4 × 25/25 = 4.0, p = 0.0455.
    statistic, p_value = chi_square([a, b]) or (0, 0)
    assert statistic == pytest.approx(4.0) and p_value == pytest.approx(0.0455, abs=1e-4)
    p_a, p_b = probability_best([a, b])
    assert p_b == pytest.approx(_exact_two(a, b), abs=1e-6)
    assert p_a == pytest.approx(0.9764, abs=1e-4)  # normal approximation: Φ(2.02) ≈ 0.978
    verdict = decide([a, b], min_ratings=20)
    assert verdict.significant and verdict.leader == "A"
    assert verdict.recommendation.startswith("use A: liked 30/50 (60%) against B 20/50 (40%)")


def test_not_enough_data_and_no_clear_winner_say_so() -> None:
    early = decide([Outcome("A", 12, 9), Outcome("B", 20, 10)], min_ratings=20)
    assert not early.significant
    assert early.recommendation.startswith("not enough data yet") and "A has 12 of 20" in early.recommendation
    assert "8 more rating(s)" in early.recommendation
    close = decide([Outcome("A", 40, 21), Outcome("B", 40, 20)], min_ratings=20)
    assert not close.significant and close.recommendation.startswith("no clear winner yet: A leads")
    three = probability_best([Outcome("A", 30, 10), Outcome("B", 30, 15), Outcome("C", 30, 20)])
    assert sum(three) == pytest.approx(1.0) and three[2] > three[1] > three[0]


def test_assignment_is_deterministic_and_follows_the_weights() -> None:
    variants = [Variant(label="A", position=0, prompt="p", version=1, workflow=None, weight=1),
                Variant(label="B", position=1, prompt="p", version=2, workflow=None, weight=3)]
    first = [assign_variant("t", variants, f"request-{i}").label for i in range(4000)]
    again = [assign_variant("t", list(reversed(variants)), f"request-{i}").label for i in range(4000)]
    assert first == again  # the same request gets the same variant, whatever order the rows came in
    share = Counter(first)["B"] / 4000
    assert 0.72 < share < 0.78  # weight 3 of 4
    other_test = [assign_variant("u", variants, f"request-{i}").label for i in range(4000)]
    assert other_test != first  # each test buckets independently


def test_the_designer_renders_a_library_prompt() -> None:
    brief = Brief(purpose="hero", subject="a copper kettle", notes="on slate")
    route = choose_route("hero")
    chosen = ChosenPrompt(version=_version("{{ subject }}, {{ notes }}, {{ look }}, shot on {{ lens }}",
                                           negative="cartoon", defaults={"lens": "85mm"}), why="test")
    design = design_image(brief, route, chosen=chosen)
    assert design.params.prompt.startswith("a copper kettle, on slate, hero shot")
    assert "shot on 85mm" in design.params.prompt
    assert design.params.negative == "cartoon" and design.prompt_ref == chosen
    unusable = ChosenPrompt(version=_version("{{ subject }} with {{ gadget }}"), ab_test="t", variant="A")
    fallback = design_image(brief, route, chosen=unusable)
    assert fallback.prompt_ref is None and fallback.params.negative == BASE_NEGATIVE
