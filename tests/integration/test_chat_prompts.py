"""The chat's Prompts tab through gradio_client: the library with its figures, hostile templates, A/B tests and
their reports; with accounts, another person's prompts and tests are invisible and cannot be changed or stopped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.chat_server import ServerThread, chat_settings
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama
from tests.integration.test_chat_accounts import _make_users, _settings

pytestmark = pytest.mark.slow

HERO = "{{ subject }}, <b>soft</b> light"


def save(client: Any, name: str, template: str, *, negative: str = "", defaults: str = "", purpose: str = "",
         description: str = "", note: str = "") -> tuple[Any, str]:
    """/save_prompt: (the library table or a skipped update, the note)."""
    result: tuple[Any, str] = client.predict(name, template, negative, defaults, purpose, description, note,
                                             api_name="/save_prompt")
    return result


def start(client: Any, name: str, arm_a: str, arm_b: str, *, split: int = 50, purpose: str = "",
          min_ratings: int = 3, workflow_a: str = "", workflow_b: str = "") -> tuple[Any, str]:
    """/start_ab_test: (the tests table or a skipped update, the note)."""
    result: tuple[Any, str] = client.predict(name, arm_a, workflow_a, arm_b, workflow_b, split, purpose,
                                             min_ratings, api_name="/start_ab_test")
    return result


def rated_arms(url: str, test: str, stars: dict[str, int], per_arm: int,
               headers: dict[str, str] | None = None) -> dict[str, int]:
    """Through the server's job API (/api): request jobs in `test` until each arm has `per_arm`, wait for the first
    `per_arm` of each arm to finish and rate them with the arm's `stars`. Answers how many jobs each arm got."""
    made: dict[str, list[str]] = {label: [] for label in stars}
    with httpx.Client(base_url=url + "api", headers=headers, timeout=30) as api:
        key = 0
        while any(len(jobs) < per_arm for jobs in made.values()):
            key += 1
            answer = api.post(f"/ab-tests/{test}/jobs", json={"key": f"order-{key}", "values": {"subject": "a teapot"},
                                                             "params": {"seed": key, "steps": 2}})
            assert answer.status_code == 201, answer.text
            made[answer.json()["variant"]].append(answer.json()["job_id"])
            assert key < 200, made
        for label, jobs in made.items():
            for job_id in jobs[:per_arm]:
                for _ in range(600):
                    status = api.get(f"/jobs/{job_id}").json()["status"]
                    if status in {"succeeded", "failed", "cancelled"}:
                        break
                    time.sleep(0.05)
                assert status == "succeeded", status
                rated = api.post(f"/jobs/{job_id}/rating", json={"stars": stars[label]})
                assert rated.status_code == 200, rated.text
    return {label: len(jobs) for label, jobs in made.items()}


def _rows(table: Any) -> list[list[str]]:
    """A Dataframe's rows as gradio_client returns them."""
    assert isinstance(table, dict), table
    rows: list[list[str]] = table["data"]
    return rows


def test_the_prompts_tab_through_gradio_client(
    fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, machine_pg_url: str, tmp_path: Path
) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    settings = chat_settings(tmp_path, fake_comfy.url, fake_ollama.url, machine_pg_url)
    with ServerThread(settings, machine_pg_url) as url:
        client = Client(url, verbose=False)
        named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
        assert {"/prompt_library", "/save_prompt", "/render_prompt", "/ab_tests", "/start_ab_test", "/stop_ab_test",
                "/ab_report"} <= named

        table, note = save(client, "hero", HERO, defaults="subject = a ceramic teapot", purpose="hero",
                           description="<script>alert(1)</script>")
        assert note == "Saved **hero@1**."
        assert _rows(table) == [["hero (hero)", "1", HERO, "", "local", "0", "—", "—", _rows(table)[0][8]]]
        assert save(client, "hero", HERO)[1] == "Nothing changed: **hero@1** is the newest."
        table, note = save(client, "hero", "{{ subject }}, hard light", negative="blurry", note="harder")
        assert note == "Saved **hero@2**." and [row[1] for row in _rows(table)] == ["2", "1"]
        assert _rows(table)[0][3] == "blurry"

        # Refusals name the problem and the fix; the library is left as it was (the table is not touched).
        refusals = {
            "Template has 20001 characters; keep it to 20000 or fewer": ("huge", "x" * 20_001),
            "not valid Jinja2 (line 1)": ("broken", "{{ subject "),
            "Template contains a NUL character; remove it": ("nul", "a\x00b"),
            "is not a valid prompt name": ("<b>Bad</b>", "x"),
            "Defaults, line 1 ('subject') is not `name = value`": ("defaults", "{{ subject }}"),
        }
        for words, (name, template) in refusals.items():
            kept, note = save(client, name, template, defaults="subject" if name == "defaults" else "")
            assert note.startswith("**Not saved.**") and words.replace("`", "\\`") in note, note
            assert kept == {"__type__": "update"}, kept
        assert "&lt;b&gt;Bad&lt;/b&gt;" in save(client, "<b>Bad</b>", "x")[1], "what was typed is shown as text"
        nulls = client.predict(None, None, None, None, None, None, None, api_name="/save_prompt")[1]
        assert nulls.startswith("**Not saved.** Name: '' is not a valid prompt name") and "Template:" in nulls

        # Rendering goes through the sandboxed worker with its time limit.
        assert client.predict("hero@1", "subject = a linen lamp", api_name="/render_prompt") == (
            "a linen lamp, <b>soft</b> light", "Rendered **hero@1** (31 characters).")
        text, note = client.predict("hero@2", None, api_name="/render_prompt")
        assert text == "a ceramic teapot, hard light", "a new version keeps the defaults it was not given"
        save(client, "pair", "{{ colour }} {{ thing }}")
        text, note = client.predict("pair@1", "colour = red", api_name="/render_prompt")
        assert text == "" and "needs a value for thing" in note, note
        assert "Its negative prompt: blurry" in client.predict("hero@2", "subject = x", api_name="/render_prompt")[1]
        save(client, "escape", "{{ ''.__class__.__mro__[1].__subclasses__() }}")
        save(client, "forever", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
        escaped = client.predict("escape@1", "", api_name="/render_prompt")
        assert escaped[0] == "" and "sandbox forbids" in escaped[1], escaped
        looped = client.predict("forever@1", "", api_name="/render_prompt")
        assert looped[0] == "" and "did not finish within 1 s and was stopped" in looped[1], looped
        assert "No prompt named 'nope' of yours" in client.predict("nope@1", "", api_name="/render_prompt")[1]
        assert "pick one from the list" in client.predict("hero", "", api_name="/render_prompt")[1]

        # An A/B test over the two versions, 50/50, for the designer's hero images.
        refused = start(client, "light", "hero@1", "hero@9")
        assert "prompt hero@9 is not in the library" in refused[1], refused
        with pytest.raises(AppError, match="greater than maximum value 99"):  # the slider's own bounds
            start(client, "light", "hero@1", "hero@2", split=100)
        assert "pick a prompt version, a workflow, or both" in start(client, "light", "", "hero@2")[1]
        tests, note = start(client, "light", "hero@1", "hero@2", purpose="hero")
        assert note == "Started **light**: A: hero@1 (50%) · B: hero@2 (50%)."
        assert _rows(tests)[0][:5] == ["light", "running", "hero", "A: hero@1 (50%) · B: hero@2 (50%)", "3"]
        assert "already running for purpose 'hero'" in start(client, "light-2", "hero@1", "hero@2",
                                                             purpose="hero")[1]
        arms, verdict = client.predict("light", api_name="/ab_report")
        assert [row[3:6] for row in _rows(arms)] == [["0", "0", "—"], ["0", "0", "—"]]
        assert "**Not significant yet**. Not enough data yet" in verdict
        assert "No A/B test picked: pick one from the Test list" in client.predict("", api_name="/stop_ab_test")[1]
        for hostile in ("light\x00", "light'; DROP TABLE ab_tests; --", "x" * 5000):
            assert "of yours" in client.predict(hostile, api_name="/ab_report")[1]

        made = rated_arms(url, "light", {"A": 5, "B": 1}, per_arm=3)
        arms, verdict = client.predict("light", api_name="/ab_report")
        assert [row[:8] for row in _rows(arms)] == [
            ["A", "hero@1", "50%", str(made["A"]), "3", "3 (100%)", "5.00", "0.986"],
            ["B", "hero@2", "50%", str(made["B"]), "3", "0 (0%)", "1.00", "0.014"]]
        assert "**Significant**: A is better. Use A: liked 3/3 (100%)" in verdict
        assert "χ² = 6.000, p = 0.0143" in verdict, verdict
        library = _rows(client.predict(api_name="/prompt_library"))
        assert [row[5:8] for row in library if row[0] == "hero (hero)"] == [
            [str(made["B"]), "0/3", "1.00"], [str(made["A"]), "3/3", "5.00"]]

        tests, note = client.predict("light", api_name="/stop_ab_test")
        assert note == "Stopped **light**; its report stays." and _rows(tests)[0][1] == "stopped"
        assert "**Significant**" in client.predict("light", api_name="/ab_report")[1]
        assert _rows(client.predict(api_name="/ab_tests"))[0][1] == "stopped"
        client.close()
    with psycopg.connect(machine_pg_url) as conn:
        authors = conn.execute("SELECT DISTINCT author FROM prompts UNION SELECT author FROM ab_tests").fetchall()
    assert authors == [("local",)], "locally everything is the local owner's"


def test_with_accounts_another_persons_prompts_and_tests_are_out_of_reach(
    fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, machine_pg_url: str, tmp_path: Path
) -> None:
    from gradio_client import Client

    settings = _settings(tmp_path, fake_comfy.url, fake_ollama.url, machine_pg_url)
    keys = _make_users(settings, machine_pg_url)
    with ServerThread(settings, machine_pg_url) as url:
        ana = Client(url, auth=("ana", keys["ana"]), verbose=False)
        bo = Client(url, auth=("bo", keys["bo"]), verbose=False)
        root = Client(url, auth=("root", keys["root"]), verbose=False)
        save(ana, "ana-hero", "{{ subject }}, soft light", purpose="hero")
        save(ana, "ana-hero", "{{ subject }}, hard light")
        assert start(ana, "ana-light", "ana-hero@1", "ana-hero@2", split=70)[1] == (
            "Started **ana-light**: A: ana-hero@1 (70%) · B: ana-hero@2 (30%).")

        # bo sees none of it, and nothing he sends reaches it.
        assert _rows(bo.predict(api_name="/prompt_library")) == []
        assert _rows(bo.predict(api_name="/ab_tests")) == []
        assert "No prompt named 'ana-hero' of yours" in bo.predict("ana-hero@1", "subject = x",
                                                                   api_name="/render_prompt")[1]
        for endpoint in ("/stop_ab_test", "/ab_report"):
            answer = bo.predict("ana-light", api_name=endpoint)
            assert "No A/B test named 'ana-light' of yours" in answer[1], answer
        taken = save(bo, "ana-hero", "{{ subject }}, bo's light")
        assert "The name 'ana-hero' is taken by someone else's prompt; choose another name" in taken[1]
        assert "ana" not in taken[1].replace("ana-hero", ""), "whose it is stays unsaid"
        assert "No prompt named 'ana-hero' of yours" in start(bo, "bo-light", "ana-hero@1", "ana-hero@2")[1]
        assert save(bo, "bo-hero", "{{ subject }}, bo's light")[1] == "Saved **bo-hero@1**."
        assert [row[0] for row in _rows(bo.predict(api_name="/prompt_library"))] == ["bo-hero"]

        # ana's are as she left them; the admin sees everyone's and may stop her test.
        assert [(row[0], row[1], row[4]) for row in _rows(ana.predict(api_name="/prompt_library"))] == [
            ("ana-hero (hero)", "2", "ana"), ("ana-hero (hero)", "1", "ana")]
        assert _rows(ana.predict(api_name="/ab_tests"))[0][1] == "running"
        assert {row[0] for row in _rows(root.predict(api_name="/prompt_library"))} == {"ana-hero (hero)", "bo-hero"}
        assert _rows(root.predict("ana-light", api_name="/stop_ab_test")[0])[0][:2] == ["ana-light", "stopped"]
        for client in (ana, bo, root):
            client.close()
    with psycopg.connect(machine_pg_url) as conn:
        rows = conn.execute("SELECT name, author FROM prompts ORDER BY name").fetchall()
    assert rows == [("ana-hero", "ana"), ("bo-hero", "bo")], "each prompt's author is who was signed in"
