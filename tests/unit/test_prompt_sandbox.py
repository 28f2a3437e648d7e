"""The prompt-template sandbox: size-making steps refused before Python allocates, and the rendering worker's
time and memory budget (a template that overruns kills its worker, which is replaced)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from atelier.tools.prompts.rendering import MEMORY_LIMIT, RenderPool
from atelier.tools.prompts.sandbox import MAX_VALUE
from atelier.tools.prompts.templating import _ENV, _READER, PromptTemplateError, render_here, template_variables

LOOPS = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
BIG = "x" * 60_000


@pytest.mark.parametrize(("template", "says"), [
    ("{{ 'x' * 4000000000 }}", "str * 4000000000 would make 4000000000"),
    ("{{ 4000000000 * 'x' }}", "str * 4000000000"),
    ("{{ [0] * 4000000000 }}", "list * 4000000000"),
    ("{{ (2 ** 3000) * (2 ** 3000) }}", "more than 4096 bits"),
    ("{{ 10 ** 100000 }}", "10 ** 100000 would make a number of more than 4096 bits"),
    ("{{ '%0999999999d' % 1 }}", "'%': the width 999999999 is above 100000"),
    ("{{ '%.999999999f' % 1 }}", "the width 999999999"),
    ("{{ '%*d' % (999999999, 1) }}", "'*' widths are refused"),
    ("{{ big + big }}", "'+' would make 120000"),
    ("{{ '%999999999s'|format(1) }}", "the filter format: the width 999999999"),
])
def test_operators_are_refused_before_python_allocates(template: str, says: str) -> None:
    with pytest.raises(PromptTemplateError, match="the prompt template was stopped") as caught:
        render_here(template, {"big": BIG})
    assert says in str(caught.value)


@pytest.mark.parametrize(("template", "says"), [
    ("{{ 'x'|center(4000000000) }}", "center was given 4000000000"),
    ("{{ 'a\nb'|indent(999999999) }}", "indent was given 999999999"),
    ("{{ ('\n' * 50000)|indent(big) }}", "indent would make"),
    ("{{ big|wordwrap(1, wrapstring=big) }}", "wordwrap would make"),
    ("{{ big|replace('', big) }}", "replace would make"),
    ("{{ [1]|batch(999999999, 0)|list }}", "batch was given 999999999"),
    ("{{ [1]|slice(999999999)|list }}", "slice was given 999999999"),
    ("{{ 5|round(-999999999) }}", "round was given -999999999"),
    ("{{ range(100000)|join(', ') }}", "join would make"),
    ("{{ 'x'.ljust(4000000000) }}", ".ljust() was given 4000000000"),
    ("{{ 'x'.rjust(4000000000) }}", ".rjust() was given"),
    ("{{ 'x'.center(4000000000) }}", ".center() was given"),
    ("{{ '1'.zfill(4000000000) }}", ".zfill() was given"),
    ("{{ ('\t' * 1000).expandtabs(999999) }}", ".expandtabs() would make"),
    ("{{ big.replace('x', 'yy') }}", ".replace() would make 120000"),
    ("{{ ','.join([big, big]) }}", "join would make"),
    ("{{ '{:>999999999}'.format(1) }}", ".format(): the width 999999999"),
    ("{{ '{:{}}'.format('x', 999999999) }}", "nested {} in a format spec"),
    ("{{ ('{0}' * 2000).format(big) }}", "calling format would make 120000000"),
    ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
     "setting namespace attribute s would make 131072"),
])
def test_filters_methods_and_namespaces_are_bounded(template: str, says: str) -> None:
    with pytest.raises(PromptTemplateError, match="the prompt template was stopped") as caught:
        render_here(template, {"big": BIG})
    assert says in str(caught.value)


def test_ordinary_templates_render_as_before() -> None:
    template = ("{% set ns = namespace(n=0) %}{% for t in tags %}{% set ns.n = ns.n + 1 %}{% endfor %}"
                "{{ subject|title }}, {{ tags|join(', ') }} ({{ ns.n }}), {{ '%s light'|format(light) }}, "
                "{{ 'f/%.1f' % 2.8 }}, {{ '{}mm'.format(lens) }}, {{ 'x' * 3 }}, {{ 2 ** 10 }}, "
                "[{{ 'mid'|center(9) }}], {{ [1, 2] + [3] }}")
    text = render_here(template, {"subject": "a red kettle", "tags": ["studio", "matte"], "light": "rim",
                                  "lens": 85})
    assert text == ("A Red Kettle, studio, matte (2), rim light, f/2.8, 85mm, xxx, 1024, [ mid ], [1, 2, 3]")


def test_the_output_is_collapsed_as_it_is_made_and_capped() -> None:
    assert render_here("{{ a }}{{ b }}", {"a": "x  \n", "b": "y"}) == "x y"
    many = render_here("{% for i in range(4000) %}a   \n  {% endfor %}", {})
    assert many == " ".join(["a"] * 4000)  # 24 000 characters made, 7 999 kept: over the cap only before collapsing
    with pytest.raises(PromptTemplateError, match="longer than 8000 characters"):
        render_here("{% for i in range(100000) %}{{ w }} {% endfor %}", {"w": "word"})


def test_reading_a_template_never_runs_its_filters() -> None:
    # Jinja runs filters with constant arguments while it compiles: the renderer's sandbox folds 'ab'|upper,
    # the reading one (save-time checks, in the server) leaves it to run time, in the worker.
    assert "'AB'" in _ENV.compile("{{ 'ab'|upper }}", raw=True)
    assert "'AB'" not in _READER.compile("{{ 'ab'|upper }}", raw=True)
    assert template_variables("{{ 'x'|center(4000000000) }}{{ subject|upper }}") == ["subject"]


def test_reading_refuses_what_nests_too_deeply() -> None:
    with pytest.raises(PromptTemplateError, match="nests too deeply"):
        template_variables("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")
    assert MAX_VALUE == 100_000


@pytest.fixture
def pool() -> Iterator[RenderPool]:
    """A one-worker pool of its own."""
    made = RenderPool(size=1)
    yield made
    made.close()


def _alive(pid: int) -> bool:
    """Whether a process (not a zombie) with this id runs."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_a_template_over_its_time_is_stopped_and_its_worker_replaced(pool: RenderPool) -> None:
    assert pool.render("{{ subject }}, soft light", {"subject": "a mug"}) == "a mug, soft light"
    [first] = pool.worker_pids()
    with pytest.raises(PromptTemplateError, match=r"did not finish within 0\.5 s and was stopped"):
        pool.render(LOOPS, {}, seconds=0.5)
    [second] = pool.worker_pids()
    assert second != first and not _alive(first)
    assert pool.render("{{ subject }}", {"subject": "again"}) == "again"


def test_the_worker_is_small_isolated_and_memory_capped(pool: RenderPool) -> None:
    assert pool.render("{{ 1 }}", {}) == "1"
    [pid] = pool.worker_pids()
    limits = {line[:26].strip(): line[26:].split() for line in Path(f"/proc/{pid}/limits").read_text().splitlines()}
    assert limits["Max address space"][:2] == [str(MEMORY_LIMIT)] * 2 and limits["Max core file size"][:2] == ["0", "0"]
    assert "-I" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1].decode()
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "pydantic_core" not in maps and "psycopg" not in maps  # none of the server's libraries, only jinja2's
    doubling = "{% set a = 'xxxxxxxxxxxxxxxx' %}" + "{% set a = a ~ a %}" * 40 + "{{ a|length }}"
    with pytest.raises(PromptTemplateError, match="more memory than a prompt may use"):
        pool.render(doubling, {})
    assert pool.render("{{ 2 }}", {}) == "2"
    assert pid not in pool.worker_pids()


def test_a_dead_worker_is_replaced_before_it_is_used(pool: RenderPool) -> None:
    assert pool.render("{{ 1 }}", {}) == "1"
    [pid] = pool.worker_pids()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert pool.render("{{ 3 }}", {}) == "3"


def test_values_must_be_json_data(pool: RenderPool) -> None:
    with pytest.raises(PromptTemplateError, match="must be JSON data"):
        pool.render("{{ x }}", {"x": object()})
    with pytest.raises(PromptTemplateError, match="needs a value for x"):
        pool.render("{{ x }}", {})


@pytest.mark.asyncio
async def test_rendering_async_leaves_the_event_loop_running(pool: RenderPool) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)  # the ticker has started
    before = ticks
    with pytest.raises(PromptTemplateError, match="did not finish"):
        await pool.render_async(LOOPS, {}, seconds=0.5)
    during = ticks - before
    stop.set()
    await ticker
    assert during >= 5  # the loop ran all the while the worker was busy
    assert await pool.render_async("{{ s }}", {"s": "ok"}) == "ok"
