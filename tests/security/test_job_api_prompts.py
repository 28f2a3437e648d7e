"""Attacks on the job API's prompt library and A/B tests, over HTTP.

A prompt template is code anyone with a key may save: each hostile one here is answered 422 within 2 s (the
issue's requirement; the budget is ATELIER_TEMPLATE_SECONDS, 1 s) while GET /health keeps answering, and queues
nothing. Prompts and A/B tests are shared: another user may read and fork them, never change or stop them; an
admin may do anything. The figures (render and /health latencies) are printed, only outcomes are asserted.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.security.conftest import Keys

LOOPS = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
MACRO = "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(64) }}"
# (template, what the 422 says, whether it can only be stopped by the time budget)
HOSTILE = [
    pytest.param("{{ 'x' * 4000000000 }}", "str * 4000000000", False, id="repeat-a-string"),
    pytest.param("{{ ['x'] * 4000000000 }}", "list * 4000000000", False, id="repeat-a-list"),
    pytest.param("{{ 'x'|center(4000000000) }}", "center was given 4000000000", False, id="center-filter"),
    pytest.param("{{ 'x'.ljust(4000000000) }}", ".ljust() was given 4000000000", False, id="ljust-method"),
    pytest.param("{{ '%0999999999d' % 1 }}", "the width 999999999", False, id="percent-width"),
    pytest.param("{{ '%s'|format('x')|indent(999999999) }}", "indent was given 999999999", False, id="indent"),
    pytest.param("{{ '{:>999999999}'.format(1) }}", "the width 999999999", False, id="format-width"),
    pytest.param("{{ (2 ** 4000) ** 4000 }}", "bits", False, id="power"),
    pytest.param("{{ subject|replace('', subject * 1000) }}", "replace would make", False, id="replace"),
    pytest.param("{{ range(100000)|join(', ') }}", "join would make", False, id="join"),
    pytest.param("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                 "{% endfor %}{{ ns.s }}", "namespace attribute s", False, id="namespace-doubling"),
    pytest.param("{% set a = 'xxxxxxxxxxxxxxxx' %}" + "{% set a = a ~ a %}" * 40 + "{{ a|length }}",
                 "more memory than a prompt may use", False, id="memory"),
    pytest.param("{% for i in range(100000) %}{{ subject }} {% endfor %}", "longer than 8000", False,
                 id="long-output"),
    pytest.param(LOOPS, "did not finish within 1 s", True, id="nested-loops"),
    pytest.param(MACRO, "did not finish within 1 s", True, id="recursive-macro"),
]


@dataclass
class Health:
    """GET /health, asked again and again until stopped: when each answer came and with what status."""

    http: httpx.AsyncClient
    answers: list[tuple[float, float, int]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def poll(self) -> None:
        """Ask until `stop` is set (10 ms apart, to leave the CPU to the rest)."""
        while not self.stop.is_set():
            asked = time.monotonic()
            status = (await self.http.get("/health")).status_code
            self.answers.append((asked, time.monotonic(), status))
            await asyncio.sleep(0.01)

    def answered_between(self, start: float, end: float) -> int:
        """How many answers arrived while [start, end] lasted."""
        return sum(start < done < end for _, done, _ in self.answers)

    def figures(self) -> str:
        """Median and slowest latency, in ms."""
        latencies = [(done - asked) * 1000 for asked, done, _ in self.answers]
        return f"/health x{len(latencies)}: median {statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms"


async def _timed(http: httpx.AsyncClient, path: str, body: dict[str, object],
                 headers: dict[str, str]) -> tuple[httpx.Response, float, float, Health]:
    """POST `path` while /health is polled: (answer, when it was sent, when it came, the poller)."""
    health = Health(http)
    poller = asyncio.create_task(health.poll())
    try:
        started = time.monotonic()
        answer = await http.post(path, json=body, headers=headers)
        ended = time.monotonic()
    finally:
        health.stop.set()
        await poller
    return answer, started, ended, health


async def _save(http: httpx.AsyncClient, name: str, template: str, headers: dict[str, str],
                **extra: object) -> httpx.Response:
    """POST /prompts/{name}/versions."""
    return await http.post(f"/prompts/{name}/versions", json={"template": template, **extra}, headers=headers)


@pytest.mark.asyncio
@pytest.mark.parametrize(("template", "says", "slow"), HOSTILE)
async def test_a_hostile_template_is_a_422_within_2_s_and_health_keeps_answering(
        accounts_api: httpx.AsyncClient, keys: Keys, template: str, says: str, slow: bool) -> None:
    ana = keys.of("ana")
    assert (await _save(accounts_api, "calm", "{{ subject }}, soft light", ana)).status_code == 201
    warm = await accounts_api.post("/prompts/calm/render", json={"values": {"subject": "a mug"}}, headers=ana)
    assert warm.json()["text"] == "a mug, soft light"
    assert (await _save(accounts_api, "evil", template, ana)).status_code == 201  # it parses: saving is fine
    answer, started, ended, health = await _timed(accounts_api, "/prompts/evil/render",
                                                  {"values": {"subject": "s" * 100}}, ana)
    print(f"\n{says}: {answer.status_code} in {ended - started:.2f} s; {health.figures()}")
    assert answer.status_code == 422 and says in answer.json()["detail"]
    assert ended - started < 2.0  # the requirement (the budget is 1 s)
    assert {status for _, _, status in health.answers} == {200}
    if slow:  # a render stopped by its time budget: the server answered others all along (a blocked loop: 0 or 1)
        assert health.answered_between(started, ended) >= 3
    after = await accounts_api.post("/prompts/calm/render", json={"values": {"subject": "a cup"}}, headers=ana)
    assert after.json()["text"] == "a cup, soft light"  # the killed worker was replaced


@pytest.mark.asyncio
async def test_the_job_routes_refuse_hostile_templates_and_queue_nothing(accounts_api: httpx.AsyncClient,
                                                                         keys: Keys) -> None:
    ana = keys.of("ana")
    assert (await _save(accounts_api, "loops", LOOPS, ana)).status_code == 201
    assert (await _save(accounts_api, "huge", "{{ subject * 4000000000 }}", ana)).status_code == 201
    test = await accounts_api.post("/ab-tests", headers=ana, json={"name": "evil-ab", "variants": [
        {"label": "A", "prompt": "loops", "version": 1},
        {"label": "B", "prompt": "loops", "version": 1, "workflow": "txt2img-turbo"}]})
    assert test.status_code == 201
    attempts: list[tuple[str, dict[str, object], str]] = [
        ("/prompts/loops/jobs", {"values": {}, "params": {"seed": 1}}, "did not finish within 1 s"),
        ("/prompts/huge/jobs", {"values": {"subject": "x"}}, "str * 4000000000"),
        ("/ab-tests/evil-ab/jobs", {"key": "order-1", "values": {}}, "did not finish within 1 s")]
    for path, body, says in attempts:
        answer, started, ended, health = await _timed(accounts_api, path, body, ana)
        print(f"\n{path}: {answer.status_code} in {ended - started:.2f} s; {health.figures()}")
        assert answer.status_code == 422 and says in answer.json()["detail"]
        assert ended - started < 2.0
        assert {status for _, _, status in health.answers} == {200}
    assert (await accounts_api.get("/jobs", headers=ana)).json() == []


@pytest.mark.asyncio
async def test_only_the_author_or_an_admin_publishes_versions_of_a_prompt(accounts_api: httpx.AsyncClient,
                                                                          keys: Keys) -> None:
    made = await _save(accounts_api, "hero", "{{ subject }}, studio light", keys.of("ana"), purpose="hero",
                       author="bo")
    assert made.status_code == 201 and made.json()["prompt"]["author"] == "ana"  # the body's author decides nothing
    for attempt in ({"template": "{{ subject }}, buy crypto", "author": "ana"},
                    {"template": "{{ subject }}, studio light", "purpose": "thumbnail"},
                    {"template": "{{ subject }}, studio light", "tags": ["spam"], "description": "mine now"}):
        refused = await accounts_api.post("/prompts/hero/versions", json=attempt, headers=keys.of("bo"))
        assert refused.status_code == 403
        detail = refused.json()["detail"]
        assert "prompt 'hero' belongs to ana" in detail and "POST /prompts/hero/fork" in detail
    prompt = (await accounts_api.get("/prompts/hero", headers=keys.of("bo"))).json()
    assert (prompt["latest"], prompt["purpose"], prompt["tags"], prompt["description"]) == (1, "hero", [], "")
    own = await _save(accounts_api, "hero", "{{ subject }}, rim light", keys.of("ana"))
    assert own.status_code == 201 and own.json()["version"]["version"] == 2
    admin = await _save(accounts_api, "hero", "{{ subject }}, rim light, 85mm", keys.of("root"), note="lens")
    assert admin.status_code == 201
    assert (admin.json()["version"]["author"], admin.json()["prompt"]["author"]) == ("root", "ana")
    versions = (await accounts_api.get("/prompts/hero/versions", headers=keys.of("bo"))).json()
    assert [(v["version"], v["author"]) for v in versions] == [(1, "ana"), (2, "ana"), (3, "root")]


@pytest.mark.asyncio
async def test_a_fork_is_the_callers_own_copy(accounts_api: httpx.AsyncClient, keys: Keys) -> None:
    await _save(accounts_api, "hero", "{{ subject }}, {{ light }}", keys.of("ana"), purpose="hero",
                defaults={"light": "soft"}, negative="blurry", tags=["studio"], description="ana's hero")
    forked = await accounts_api.post("/prompts/hero/fork", json={"name": "hero-bo", "author": "ana"},
                                     headers=keys.of("bo"))
    assert forked.status_code == 201
    copy = forked.json()
    assert copy["prompt"]["author"] == "bo" and copy["version"]["author"] == "bo"
    assert (copy["prompt"]["purpose"], copy["prompt"]["tags"], copy["prompt"]["latest"]) == (None, ["studio"], 1)
    assert (copy["version"]["template"], copy["version"]["negative"], copy["version"]["defaults"],
            copy["version"]["note"]) == ("{{ subject }}, {{ light }}", "blurry", {"light": "soft"},
                                         "forked from hero@1")
    changed = await _save(accounts_api, "hero-bo", "{{ subject }}, {{ light }}, film grain", keys.of("bo"),
                          purpose="hero")
    assert changed.status_code == 201 and changed.json()["version"]["version"] == 2
    assert (await _save(accounts_api, "hero-bo", "{{ subject }}", keys.of("ana"))).status_code == 403
    taken = await accounts_api.post("/prompts/hero/fork", json={"name": "hero-bo"}, headers=keys.of("bo"))
    assert taken.status_code == 409 and "a prompt named 'hero-bo' exists" in taken.json()["detail"]
    missing = await accounts_api.post("/prompts/nope/fork", json={"name": "nope-bo"}, headers=keys.of("bo"))
    assert missing.status_code == 404
    original = (await accounts_api.get("/prompts/hero/versions", headers=keys.of("ana"))).json()
    assert [v["template"] for v in original] == ["{{ subject }}, {{ light }}"]


@pytest.mark.asyncio
async def test_only_the_author_or_an_admin_stops_an_ab_test(accounts_api: httpx.AsyncClient, keys: Keys) -> None:
    ana, bo = keys.of("ana"), keys.of("bo")
    await _save(accounts_api, "hero", "{{ subject }}, soft light", ana, purpose="hero")
    await _save(accounts_api, "hero", "{{ subject }}, hard light", ana)
    variants = [{"label": "soft", "prompt": "hero", "version": 1}, {"label": "hard", "prompt": "hero", "version": 2}]
    made = await accounts_api.post("/ab-tests", headers=ana, json={"name": "light", "variants": variants,
                                                                   "purpose": "hero", "author": "bo"})
    assert made.status_code == 201 and made.json()["author"] == "ana"
    refused = await accounts_api.post("/ab-tests/light/stop", headers=bo)
    assert refused.status_code == 403 and "A/B test 'light' belongs to ana" in refused.json()["detail"]
    assert (await accounts_api.get("/ab-tests/light", headers=bo)).json()["status"] == "running"
    assigned = await accounts_api.post("/ab-tests/light/jobs", headers=bo, json={"key": "k1", "values": {
        "subject": "a mug"}})
    assert assigned.status_code == 201  # using a running test is not changing it
    stopped = await accounts_api.post("/ab-tests/light/stop", headers=ana)
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    other = await accounts_api.post("/ab-tests", headers=bo, json={"name": "bo-light", "variants": variants})
    assert other.status_code == 201 and other.json()["author"] == "bo"
    by_admin = await accounts_api.post("/ab-tests/bo-light/stop", headers=keys.of("root"))
    assert by_admin.status_code == 200 and by_admin.json()["status"] == "stopped"


@pytest.mark.asyncio
async def test_in_local_mode_the_caller_is_the_local_admin(local_api: httpx.AsyncClient) -> None:
    made = await _save(local_api, "hero", "{{ subject }}", {}, author="n8n")
    assert made.status_code == 201 and made.json()["prompt"]["author"] == "local"
    again = await _save(local_api, "hero", "{{ subject }}, rim light", {})
    assert again.status_code == 201 and again.json()["version"]["author"] == "local"
