"""The Prompts tab: the caller's prompt library (versions, uses, ratings), rendering, and A/B tests with reports.

Laid out and wired here; what each control does is prompts_actions.py, the words and rows prompts_view.py.
Named Gradio endpoints: /prompt_library, /save_prompt, /render_prompt, /ab_tests, /start_ab_test, /stop_ab_test
and /ab_report; the tab fills itself when it is opened.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from atelier.chat.chat_tab import workflow_choices
from atelier.chat.prompts_actions import PromptActions
from atelier.chat.prompts_view import LIBRARY_COLUMNS, REPORT_COLUMNS, TEST_COLUMNS
from atelier.chat.runtime import ChatRuntime, Load
from atelier.tools.prompts.significance import THRESHOLD

__all__ = ["prompts_tab"]

_INTRO = ("Your prompt library: every version of each prompt with the images it made (uses), how many of the rated "
          "ones were liked (★4–5 or thumbs up) and their average stars. Templates are Jinja2: "
          "`{{ subject }}, soft light`.")
_VALUES_HELP = "One per line: name = value (a list or object in JSON: colours = [\"red\", \"teal\"])."


def prompts_tab(runtime: ChatRuntime) -> list[Load]:
    """The Prompts tab, laid out and wired (it fills when opened, and after each change)."""
    act = PromptActions(runtime)
    workflows = [("any: the one the designer picks", ""), *workflow_choices(runtime.settings)[1:]]
    with gr.Tab("Prompts", elem_id="prompts-tab") as tab:
        with gr.Row(equal_height=True):
            gr.Markdown(_INTRO)
            refresh = gr.Button("Refresh", scale=0, min_width=110)
        library = gr.Dataframe(headers=LIBRARY_COLUMNS, label="Library", interactive=False, wrap=True,
                               elem_id="prompt-library",
                               column_widths=["11%", "4%", "27%", "12%", "7%", "6%", "10%", "7%", "16%"])
        with gr.Row():
            with gr.Column(elem_id="prompt-form"):
                gr.Markdown("### Add a prompt or a version")
                with gr.Row():
                    name = gr.Textbox(label="Name", placeholder="hero-product", max_lines=1, elem_id="prompt-name")
                    purpose = gr.Textbox(label="Purpose (optional)", placeholder="hero", max_lines=1,
                                         info="The designer uses its best version for images of this purpose.",
                                         elem_id="prompt-purpose")
                template = gr.Textbox(label="Template", lines=3, elem_id="prompt-template",
                                      placeholder="{{ subject }}, studio light, 85mm",
                                      info="A changed template (or negative, or defaults) is a new version.")
                negative = gr.Textbox(label="Negative prompt", placeholder="empty: keep the newest version's",
                                      max_lines=2, elem_id="prompt-negative")
                defaults = gr.Textbox(label="Defaults", lines=2, elem_id="prompt-defaults",
                                      placeholder="subject = a ceramic teapot",
                                      info=_VALUES_HELP + " Empty: keep the newest version's.")
                with gr.Row():
                    description = gr.Textbox(label="Description", max_lines=1, elem_id="prompt-description")
                    note = gr.Textbox(label="Note: what changed", max_lines=1, elem_id="prompt-note")
                save = gr.Button("Save prompt", variant="primary")
                save_note = gr.Markdown(elem_id="save-note")
            with gr.Column(elem_id="render-form"):
                gr.Markdown("### Render a prompt")
                pick = gr.Dropdown(label="Version", choices=[], value=None, allow_custom_value=True,
                                   elem_id="render-version")
                values = gr.Textbox(label="Values", lines=3, info=_VALUES_HELP, elem_id="render-values")
                render = gr.Button("Render")
                rendered = gr.Textbox(label="Rendered prompt", lines=3, interactive=False, elem_id="rendered")
                render_note = gr.Markdown(elem_id="render-note")
        gr.Markdown("### A/B tests")
        tests = gr.Dataframe(headers=TEST_COLUMNS, label="Your A/B tests", interactive=False, wrap=True,
                             elem_id="ab-tests")
        with gr.Row():
            with gr.Column(elem_id="ab-form"):
                gr.Markdown("#### Start a test")
                with gr.Row():
                    test_name = gr.Textbox(label="Test name", placeholder="hero-light", max_lines=1, elem_id="ab-name")
                    test_purpose = gr.Textbox(label="Purpose (optional)", placeholder="hero", max_lines=1,
                                              info="The designer's images of this purpose take part.",
                                              elem_id="ab-purpose")
                with gr.Row():
                    arm_a = gr.Dropdown(label="Arm A: version", choices=[], value="", allow_custom_value=True,
                                        elem_id="ab-arm-a")
                    workflow_a = gr.Dropdown(label="Arm A: workflow", choices=workflows, value="")
                with gr.Row():
                    arm_b = gr.Dropdown(label="Arm B: version", choices=[], value="", allow_custom_value=True,
                                        elem_id="ab-arm-b")
                    workflow_b = gr.Dropdown(label="Arm B: workflow", choices=workflows, value="")
                with gr.Row():
                    split = gr.Slider(1, 99, value=50, step=1, label="Share of requests for A (%)")
                    min_ratings = gr.Number(label="Ratings per arm before a verdict", value=20, precision=0,
                                            minimum=1, maximum=100_000, elem_id="ab-min-ratings")
                start = gr.Button("Start test", variant="primary")
                ab_note = gr.Markdown(elem_id="ab-note")
            with gr.Column(elem_id="ab-report"):
                gr.Markdown(f"#### Report\nA verdict is significant when one arm's P(best) reaches {THRESHOLD:g} "
                            "and every arm has its ratings.")
                test_pick = gr.Dropdown(label="Test", choices=[], value=None, allow_custom_value=True,
                                        elem_id="ab-test")
                with gr.Row():
                    show_report = gr.Button("Show report")
                    stop = gr.Button("Stop test", variant="stop")
                verdict = gr.Markdown(elem_id="ab-verdict")
                arms = gr.Dataframe(headers=REPORT_COLUMNS, label="Arms", interactive=False, wrap=True,
                                    elem_id="ab-arms")

    hidden: dict[str, Any] = {"api_visibility": "private"}
    pickers = [pick, arm_a, arm_b, test_pick]
    tab.select(act.library, None, library, **hidden).then(act.tests, None, tests, **hidden).then(
        act.pickers, None, pickers, **hidden)
    refresh.click(act.library, None, library, api_name="prompt_library").then(
        act.tests, None, tests, api_name="ab_tests").then(act.pickers, None, pickers, **hidden)
    save.click(act.save, [name, template, negative, defaults, purpose, description, note], [library, save_note],
               api_name="save_prompt").then(act.pickers, None, pickers, **hidden)
    pick.input(act.variables, [pick], [values, render_note], **hidden)
    render.click(act.render, [pick, values], [rendered, render_note], api_name="render_prompt")
    start.click(act.start, [test_name, arm_a, workflow_a, arm_b, workflow_b, split, test_purpose, min_ratings],
                [tests, ab_note], api_name="start_ab_test").then(act.pickers, None, pickers, **hidden)
    stop.click(act.stop, [test_pick], [tests, ab_note], api_name="stop_ab_test").then(
        act.report, [test_pick], [arms, verdict], **hidden)
    show_report.click(act.report, [test_pick], [arms, verdict], api_name="ab_report")
    test_pick.input(act.report, [test_pick], [arms, verdict], **hidden)
    return []
