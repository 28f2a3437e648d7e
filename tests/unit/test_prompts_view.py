"""The Prompts tab's words (atelier/chat/prompts_view.py): rows, the report's verdict, the forms' parsing, escaping."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from atelier.chat.prompts_view import (
    FormError,
    ab_rows,
    library_rows,
    parse_ref,
    parse_values,
    plain,
    report_rows,
    split_weights,
    validation_words,
    values_text,
    verdict_text,
    version_choice,
)
from atelier.tools.prompts.models import (
    ABReport,
    ABTest,
    ABTestDraft,
    Prompt,
    PromptDraft,
    PromptVersion,
    Variant,
    VariantReport,
    VersionStats,
)

WHEN = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
LABELS = {"name": "Name", "template": "Template", "min_ratings": "Ratings per arm"}


def _version(number: int, template: str, negative: str = "") -> PromptVersion:
    return PromptVersion(prompt="hero", version=number, template=template, negative=negative,
                         defaults={"look": "studio"}, note="", author="ana", created_at=WHEN)


def _report(status: str, significant: bool, rated: tuple[int, int], p_value: float | None) -> ABReport:
    arms = [VariantReport(label=label, arm=f"hero@{i + 1}", weight=weight, uses=rated[i] + 1, rated=rated[i],
                          liked=liked, like_rate=liked / rated[i] if rated[i] else None,
                          mean_stars=4.5 if rated[i] else None, p_best=p)
            for i, (label, weight, liked, p) in enumerate((("A", 3, rated[0], 0.98), ("B", 1, 0, 0.02)))]
    return ABReport(test="light", status=status, purpose="hero", method="Bayesian beta-binomial", min_ratings=3,
                    variants=arms, chi2=6.0 if p_value is not None else None, p_value=p_value,
                    significant=significant, leader="A", recommendation="use A: liked 3/3 (100%)" if significant
                    else "not enough data yet: every variant needs 3 rated images")


def test_plain_shows_what_was_typed_as_text() -> None:
    assert plain("<img src=x onerror=alert(1)> *bold* [link](http://x) `code` snake_case # head | cell") == (
        "&lt;img src=x onerror=alert(1)&gt; \\*bold\\* \\[link\\](http://x) \\`code\\` snake\\_case \\# head "
        "\\| cell")
    assert plain("hero@2 (50%) e.g. hero-product") == "hero@2 (50%) e.g. hero-product"


def test_library_rows_put_the_newest_version_first_with_its_figures() -> None:
    prompt = Prompt(name="hero", category="product", purpose="hero", tags=[], description="", latest=2,
                    author="ana", created_at=WHEN, updated_at=WHEN)
    stats = [VersionStats(prompt="hero", version=1, uses=4, rated=3, liked=2, mean_stars=11 / 3, score=0.6)]
    rows = library_rows([(prompt, [_version(1, "{{ subject }}, <b>soft</b>"), _version(2, "{{ subject }}", "blur")],
                          stats)])
    assert rows == [["hero (hero)", "2", "{{ subject }}", "blur", "ana", "0", "—", "—", "2025-03-04 05:06"],
                    ["hero (hero)", "1", "{{ subject }}, <b>soft</b>", "", "ana", "4", "2/3", "3.67",
                     "2025-03-04 05:06"]]


def test_a_version_is_picked_and_read_back_as_name_at_version() -> None:
    assert version_choice(_version(2, "a  very\nlong " + "x" * 80)) == ("hero@2 — a very long " + "x" * 35 + "…",
                                                                       "hero@2")
    assert parse_ref(" hero@12 ") == ("hero", 12)
    for wrong, words in (("hero", "'hero' is not a prompt version"), ("", "no prompt version picked"),
                         (None, "no prompt version picked"), ("Hero@1", "pick one from the list")):
        with pytest.raises(FormError, match=words):
            parse_ref(wrong)


def test_values_are_lines_of_name_equals_value() -> None:
    text = "subject = a red kettle = shiny\n\n# a comment\ncolours = [\"red\", \"teal\"]\nsize={\"w\": 2}\nempty ="
    assert parse_values(text) == {"subject": "a red kettle = shiny", "colours": ["red", "teal"], "size": {"w": 2},
                                  "empty": ""}
    for wrong, words in (("subject", r"Values, line 1 \('subject'\) is not `name = value`"),
                         ("ok = 1\n2x = y", "line 2"), ("a-b = c", "line 1"),
                         ("colours = [red]", r"colours's value starts like JSON but is not \(Expecting value\)"),
                         ("deep = " + "[" * 100_000, "it nests too deeply")):
        with pytest.raises(FormError, match=words):
            parse_values(wrong)
    assert values_text(["look", "subject", "tags"], {"look": "studio", "tags": ["a"]}) == (
        'look = studio\nsubject = \ntags = ["a"]')
    assert parse_values(values_text(["look", "tags"], {"look": "studio", "tags": ["a"]})) == {
        "look": "studio", "tags": ["a"]}


def test_the_split_becomes_weights_in_lowest_terms() -> None:
    assert [split_weights(p) for p in (50, 70, 33, 1, 99, 25.4)] == [(1, 1), (7, 3), (33, 67), (1, 99), (99, 1),
                                                                     (1, 3)]
    for wrong in (0, 100, -5, None, math.nan, math.inf):
        with pytest.raises(FormError, match="choose 1–99 %"):
            split_weights(wrong)


def test_test_rows_show_the_arms_and_their_shares() -> None:
    variants = [Variant(label="A", position=0, prompt="hero", version=1, workflow=None, weight=7),
                Variant(label="B", position=1, prompt="hero", version=2, workflow="txt2img-hq", weight=3)]
    test = ABTest(name="light", purpose=None, status="stopped", min_ratings=20, description="", author="ana",
                  created_at=WHEN, stopped_at=WHEN, variants=variants)
    assert ab_rows([test]) == [["light", "stopped", "—", "A: hero@1 (70%) · B: hero@2 + workflow txt2img-hq (30%)",
                                  "20", "ana", "2025-03-04 05:06", "2025-03-04 05:06"]]


def test_the_report_says_its_significance_in_words() -> None:
    significant = _report("running", True, (3, 3), 0.0143)
    assert report_rows(significant) == [["A", "hero@1", "75%", "4", "3", "3 (100%)", "4.50", "0.980"],
                                        ["B", "hero@2", "25%", "4", "3", "0 (0%)", "4.50", "0.020"]]
    words = verdict_text(significant)
    assert "**Significant**: A is better. Use A: liked 3/3 (100%)" in words
    assert "χ² = 6.000, p = 0.0143" in words and "P(best): A 0.980, B 0.020" in words
    early = verdict_text(_report("running", False, (0, 0), None))
    assert "**Not significant yet**. Not enough data yet" in early and "not defined yet" in early
    assert report_rows(_report("running", False, (0, 0), None))[0][5:7] == ["—", "—"]
    assert "**Not significant** (the test is stopped)" in verdict_text(_report("stopped", False, (1, 1), 0.5))


def test_validation_problems_are_named_by_the_tabs_labels() -> None:
    with pytest.raises(ValidationError) as long:
        PromptDraft(name="hero", template="x" * 20_001)
    assert validation_words(long.value, LABELS) == "Template has 20001 characters; keep it to 20000 or fewer"
    with pytest.raises(ValidationError) as several:
        PromptDraft(name="Bad Name", template="")
    assert validation_words(several.value, LABELS) == (
        "Name: 'Bad Name' is not a valid prompt name: use 1–64 lower-case letters, digits, '.', '_' or '-', "
        "starting with a letter or digit (e.g. hero-product); Template is empty; fill it in")
    with pytest.raises(ValidationError) as low:
        ABTestDraft(name="t", variants=[], min_ratings=0)
    assert validation_words(low.value, LABELS) == (
        "variants: List should have at least 2 items after validation, not 0; Ratings per arm is 0; it must be at "
        "least 1")
