"""The benches' pure helpers: the shared --smoke option; chat_latency's percentiles, requests, inputs and updates;
ledger_throughput's interleaved rounds; load's accounts, final events and table.

tests/integration/test_benches.py runs every bench's smoke size.
"""

from __future__ import annotations

import argparse
import math

import pytest

from atelier.graphs.routing import classify
from bench.chat_latency import (
    QUESTION,
    Input,
    Stats,
    answer_started,
    chat_values,
    draw_requests,
    floor_prompt,
    history_of,
    image_shown,
    overhead,
    percentile,
    request_values,
    subject_of,
)
from bench.smoke import missing, parse_args, skipped_line


def sized_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    return parser


def test_smoke_replaces_the_default_sizes_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(sized_parser(), {"jobs": 40, "sizes": [120]}, ["--smoke"])
    assert (args.jobs, args.sizes, args.smoke) == (40, [120], True)
    assert capsys.readouterr().out == ("smoke run (--jobs 40, --sizes 120): these figures show the bench works, "
                                       "not how fast Atelier is\n")


def test_sizes_given_beside_smoke_win_and_without_it_the_defaults_stay(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args(sized_parser(), {"jobs": 40, "sizes": [120]}, ["--smoke", "--jobs", "7"])
    assert (args.jobs, args.sizes) == (7, [120])
    capsys.readouterr()
    args = parse_args(sized_parser(), {"jobs": 40, "sizes": [120]}, [])
    assert (args.jobs, args.sizes, args.smoke) == (5000, [10_000, 100_000], False)
    assert capsys.readouterr().out == ""


def test_a_skipped_comparison_names_its_package_and_the_install() -> None:
    assert missing("no_such_module_for_atelier") and not missing("httpx")
    line = skipped_line("the comparison with procrastinate", "procrastinate")
    assert line == ("skipped: the comparison with procrastinate: procrastinate is not installed "
                    "(pip install -e '.[bench]' adds it)")


def test_percentile_interpolates_like_numpy() -> None:
    samples = [4.0, 1.0, 3.0, 2.0]
    assert percentile(samples, 50) == 2.5
    assert percentile(samples, 0) == 1.0 and percentile(samples, 100) == 4.0
    assert math.isclose(percentile(samples, 95), 3.85)
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_stats_and_overhead_use_the_medians() -> None:
    floor, atelier = Stats.of([0.010, 0.020, 0.030]), Stats.of([0.040, 0.050, 0.300])
    assert floor.n == 3 and math.isclose(floor.mean, 0.020) and math.isclose(floor.p50, 0.020)
    ratio, extra_ms = overhead(atelier, floor)
    assert math.isclose(ratio, 2.5) and math.isclose(extra_ms, 30.0)
    assert overhead(atelier, Stats(1, 0.0, 0.0, 0.0))[0] == math.inf


def test_requests_route_as_the_bench_expects_and_never_repeat() -> None:
    assert classify(QUESTION) == "answer"
    requests = draw_requests(250)
    assert len(set(requests)) == 250
    assert all(classify(r) == "generate" for r in requests)
    assert draw_requests(3, start=5) == requests[5:8]
    assert subject_of("draw a paper boat on a pond") == "paper boat on a pond"


def test_floor_prompt_swaps_the_subject_only() -> None:
    job = "paper boat on a pond, illustration, coherent style"
    assert floor_prompt(job, "paper boat on a pond", "red fox in a wheat field") == \
        "red fox in a wheat field, illustration, coherent style"
    tags = "(paper boat on a pond:1.2), illustration"  # a workflow that takes weighted tags
    assert floor_prompt(tags, "paper boat on a pond", "tin robot") == "(tin robot:1.2), illustration"
    with pytest.raises(ValueError):
        floor_prompt(job, "red fox", "tin robot")


CHAT_INPUTS = (Input("Message", None), Input("Atelier", []), Input(None), Input(None), Input("Workflow", ""),
               Input("Quality", "auto"), Input("Illustrate answers", "auto"), Input("Target seconds", None))


def test_the_chat_inputs_are_filled_by_label_and_every_other_input_keeps_its_default() -> None:
    values = chat_values(CHAT_INPUTS, request_values("draw a boat", "txt2img"))
    assert values == ["draw a boat", [], None, None, "txt2img", "auto", "auto", None]
    grown = (*CHAT_INPUTS, Input("Seed", 7))  # an input the chat gains later, with a default
    assert chat_values(grown, request_values("hi", "")) == ["hi", [], None, None, "", "auto", "auto", None, 7]


def test_the_chat_inputs_name_what_no_longer_fits() -> None:
    without_workflow = tuple(i for i in CHAT_INPUTS if i.label != "Workflow")
    with pytest.raises(RuntimeError, match=r"no input labelled \['Workflow'\]"):
        chat_values(without_workflow, request_values("hi", "txt2img"))
    required = (*CHAT_INPUTS, Input("Style", has_default=False))
    with pytest.raises(RuntimeError, match="'Style' has no default"):
        chat_values(required, request_values("hi", "txt2img"))


def test_the_history_is_the_updates_one_list_wherever_it_sits() -> None:
    user = {"role": "user", "content": "hi"}
    assert history_of(("", [user], None, "")) == [user]
    assert history_of(["", {"jobs": 1}, {"visible": False}, [user], ""]) == [user]
    assert history_of(("", None)) == [] and history_of(None) == []


def test_updates_are_read_like_gradio_client_returns_them() -> None:
    user = {"role": "user", "content": [{"type": "text", "text": QUESTION}]}
    assert not answer_started(("", [user], None, ""))
    assert not answer_started(("", [user, {"role": "assistant", "content": ""}], None, ""))
    assert answer_started(("", [user, {"role": "assistant", "content": [{"type": "text", "text": "Terra"}]}], None,
                           ""))
    queued = {"role": "assistant", "content": [{"type": "text", "text": "Rendering “a boat” ▰▱ step 1/20"}]}
    done_text = {"role": "assistant", "content": [{"type": "text", "text": "Done: “a boat”"}]}
    done = {"role": "assistant", "content": [{"type": "text", "text": "Done: “a boat”"},
                                             {"type": "file", "file": {"path": "/tmp/x.png"}}]}
    assert not image_shown(("", [user, queued], None, ""))
    assert not image_shown(("", [user, done_text], None, ""))
    assert image_shown(("", [user, done], None, ""))
    assert not image_shown(None)


def test_the_server_log_splits_at_the_forced_shutdown() -> None:
    from bench.chat_latency import split_server_log

    assert split_server_log("") == ("", "")
    assert split_server_log("WARNING x\n") == ("WARNING x\n", "")
    log = ("WARNING x\nERROR:    Cancel 1 running task(s), timeout graceful shutdown exceeded\n"
           "ERROR:    Exception in ASGI application\nTraceback …\n")
    assert split_server_log(log) == ("WARNING x\n",
                                     "ERROR:    Cancel 1 running task(s), timeout graceful shutdown exceeded")


def test_the_page_wire_updates_apply_gradio_diffs_and_find_image_urls() -> None:
    from bench.chat_latency import apply_update, done_image_urls

    user = {"role": "user", "content": [{"type": "text", "text": "draw a boat"}]}
    first = ["", [user], None, {"visible": False, "__type__": "update"}, ""]
    outputs = apply_update(None, first)
    assert not answer_started(outputs)
    queued = {"role": "assistant", "content": [{"type": "text", "text": "Queued: a boat"}]}
    outputs = apply_update(outputs, [[], [["add", [1], queued]], [], [], []])
    file = {"type": "file", "file": {"path": "/tmp/p.png", "url": "http://127.0.0.1:1/gradio_api/file=/tmp/p.png"}}
    outputs = apply_update(outputs, [[], [["add", [1, "content", 1], file]], [], [], []])
    assert answer_started(outputs) and not image_shown(outputs) and done_image_urls(outputs) == []
    outputs = apply_update(outputs, [[], [["replace", [1, "content", 0, "text"], "Done: a boat"]], [], [], []])
    assert image_shown(outputs)
    assert done_image_urls(outputs) == ["http://127.0.0.1:1/gradio_api/file=/tmp/p.png"]
    assert first[1] == [user], "the first message's values are not changed in place"


def test_the_summary_line_names_both_chat_paths() -> None:
    from bench.chat_latency import summary_line

    line = summary_line("first token p50", Stats.of([0.02]), Stats.of([0.1]), Stats.of([0.05]))
    assert line == ("first token p50: floor 20.0 ms; chat via gradio_client 100.0 ms, overhead 5.00x (+80.0 ms); "
                    "as the page does 50.0 ms, 2.50x (+30.0 ms)")


def test_the_ledger_rounds_alternate_which_queue_runs_first() -> None:
    from bench.ledger_throughput import round_order

    assert [round_order(i) for i in range(3)] == [("atelier", "procrastinate"), ("procrastinate", "atelier"),
                                                  ("atelier", "procrastinate")]
    assert round_order(1, ("atelier",)) == ("atelier",)


def test_the_ledger_ratio_is_the_median_of_the_rounds_ratios() -> None:
    from bench.ledger_throughput import Run, median_rate, median_ratio

    ours = [Run(900.0, 1.0), Run(300.0, 1.0), Run(1000.0, 1.0)]
    theirs = [Run(450.0, 1.0), Run(300.0, 1.0), Run(400.0, 1.0)]  # round 2 was a slow spell for both
    assert median_ratio(ours, theirs) == 2.0  # ratios 2.0, 1.0, 2.5: not 2200/1150 from pooled figures
    assert median_rate(ours) == 900.0
    with pytest.raises(ValueError, match="same number of rounds"):
        median_ratio(ours, theirs[:2])
    with pytest.raises(ValueError):
        median_ratio([], [])


def test_a_ledger_round_line_shows_the_queues_in_running_order_and_the_ratio_when_both_ran() -> None:
    from bench.ledger_throughput import Run, round_line

    both = {"procrastinate": Run(400.0, 700.4), "atelier": Run(500.0, 900.0)}
    assert round_line(1, "one by one", both) == (
        "round 2 one by one: procrastinate    400 jobs/s (submit CPU   700 us/job), "
        "atelier    500 jobs/s (submit CPU   900 us/job), ratio 1.25x")
    assert round_line(0, "batched", {"atelier": Run(1200.0, 80.0)}) == (
        "round 1 batched   : atelier   1200 jobs/s (submit CPU    80 us/job)")


def test_the_load_spreads_its_sockets_over_enough_users_for_the_per_user_cap() -> None:
    from bench.load import user_of, users_needed

    assert users_needed(300, 20) == 20 and users_needed(300, 1) == 10 and users_needed(33, 1, cap=32) == 2
    assert users_needed(1, 0) == 1
    users = ["a", "b", "c"]
    assert [user_of(i, users) for i in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]


def test_the_load_splits_chat_turns_evenly_and_knows_final_events() -> None:
    from bench.load import is_final, spread

    assert spread(60, 20) == [3] * 20 and spread(7, 3) == [3, 2, 2] and spread(1, 3) == [1, 0, 0]
    assert all(is_final({"type": kind}) for kind in ("done", "failed", "cancelled"))
    assert not any(is_final({"type": kind}) for kind in ("status", "submitted", "started", "progress", "preview"))
    assert not is_final({})


def test_the_load_table_gives_percentiles_in_ms_and_ratios_under_load() -> None:
    from collections import Counter

    from bench.load import Tally, format_table, ratio, table_rows

    one = Tally(submit=[0.010, 0.020], first_event=[0.005], first_token=[0.1], scrape=[], seconds=2.0,
                peak_sockets=1, peak_connections=10, peak_rss=100 * 1024 * 1024, finals=2)
    many = Tally(submit=[0.030, 0.050], first_event=[0.020], first_token=[0.3], scrape=[0.01], seconds=1.0,
                 peak_sockets=300, peak_connections=25, peak_rss=150 * 1024 * 1024, finals=2,
                 errors=Counter({"POST /jobs 503": 2}), api_cpu=0.5, driver_cpu=0.9)
    rows = {name: (a, b, r) for name, a, b, r in table_rows(one, many)}
    assert rows["submit p50 (ms)"] == ("15.0", "40.0", "2.67x")
    assert rows["first event p99 (ms)"] == ("5.0", "20.0", "4.00x")
    assert rows["scrape /metrics p50 (ms)"] == ("–", "10.0", "–")  # no scrape finished in the first run
    assert rows["jobs/s (submit to last final)"] == ("1.0", "2.0", "2.00x")
    assert rows["peak PostgreSQL connections"] == ("10", "25", "2.50x")
    assert rows["api RSS peak (MB)"] == ("100.0", "150.0", "1.50x")
    assert rows["api CPU (% of one core)"] == ("0.0", "50.0", "–")  # no CPU noted in the first run: no ratio
    assert rows["driver CPU (% of one core)"] == ("0.0", "90.0", "–")
    assert rows["events lost (must be 0)"] == ("0", "0", "–") and rows["errors"] == ("0", "2", "–")
    assert ratio(None, 1.0) == ratio(1.0, 0) == "–"
    text = format_table(table_rows(one, many)).splitlines()
    assert text[0].split() == ["figure", "one", "client", "under", "load", "ratio"]
    assert text[1] == f"{'submit p50 (ms)':<32}{'15.0':>12}{'40.0':>12}{'2.67x':>9}"
