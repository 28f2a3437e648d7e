"""Property-based runs of the job API against its own OpenAPI document (schemathesis) on a fresh database.

Every operation gets generated requests, valid and invalid ones (plus schemathesis' coverage cases); each answer
must not be a 5xx, must use a documented status code and content type, and its body must match the declared
schema. A stateful run then follows the document's links (a created job → read it, cancel it). No worker runs:
jobs stay queued, which is enough to reach every route (images and previews of queued jobs are 404s).
What the runs found is pinned as plain cases at the end. `ATELIER_SCHEMA_EXAMPLES=500` makes a deeper local run.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from importlib.metadata import requires
from pathlib import Path
from typing import Any, cast

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.internal.conjecture import utils as conjecture
from schemathesis.generation.stateful.state_machine import APIStateMachine
from schemathesis.python import asgi

from atelier.api.jobs import ApiError, build_job_api
from atelier.tools.settings import load_settings
from tests.pg import fresh_database

# schemathesis releases that generate through hypothesis-jsonschema 0.23 (the ones langgraph-api's jsonschema-rs pin
# allows) call `many.more()`, which Hypothesis 6.170.10 removed: say so instead of failing deep in collection.
if any(r.startswith("hypothesis-jsonschema") for r in requires("schemathesis") or []) and not hasattr(
        conjecture.many, "more"):
    pytest.fail("this schemathesis needs hypothesis<6.170.10 (hypothesis-jsonschema calls many.more()); "
                "pin it in pyproject's dev extras", pytrace=False)

BASE_URL = "http://127.0.0.1"
EXAMPLES = int(os.environ.get("ATELIER_SCHEMA_EXAMPLES", "25"))
HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]

# Deterministic and quick enough for CI: a fixed seed, derandomized Hypothesis, EXAMPLES per operation and no example
# database on disk. Off: `positive_data_acceptance` (a schema-valid body may still name a workflow that does not
# exist, and a 422 naming it is the right answer) and `negative_data_rejection` (the API keeps pydantic's lax
# coercion on purpose: "steps": "20" is 20, as form-style clients such as n8n's field lists send strings).
CONFIG = schemathesis.Config.from_dict({
    "seed": 20240611,
    "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
    "checks": {"positive_data_acceptance": {"enabled": False}, "negative_data_rejection": {"enabled": False}},
})

# The document is the app's own (building the app needs no database); requests go through `api_client`.
schema = schemathesis.openapi.from_dict(build_job_api(load_settings()).openapi(), config=CONFIG)


@pytest.fixture(scope="module")
def api_client(tmp_path_factory: pytest.TempPathFactory, embedded_admin_url: str) -> Iterator[requests.Session]:
    """The job API in-process (schemathesis' ASGI client) on a fresh database; its lifespan opens the ledger once.

    The embedded PostgreSQL: it has pgvector, so the memory's routes answer too."""
    data: Path = tmp_path_factory.mktemp("schema-api")
    with fresh_database(embedded_admin_url) as url:
        api = build_job_api(load_settings(data_dir=data, database_url=url, comfyui_urls="http://127.0.0.1:9"))
        with asgi.get_client(api) as client:
            yield client


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=HEALTH)
def test_every_operation_conforms_to_its_openapi(case: schemathesis.Case, api_client: requests.Session) -> None:
    case.call_and_validate(base_url=BASE_URL, session=api_client)


@pytest.fixture
def fresh_api_client(tmp_path: Path, embedded_admin_url: str) -> Iterator[requests.Session]:
    """The job API on a database of its own: the stateful run's path (derandomized) then never depends on what the
    property run left in the shared one (reused idempotency keys answer 200 or 409 instead of creating a job)."""
    with fresh_database(embedded_admin_url) as url:
        api = build_job_api(load_settings(data_dir=tmp_path / "data", database_url=url,
                                          comfyui_urls="http://127.0.0.1:9"))
        with asgi.get_client(api) as client:
            yield client


def test_linked_calls_conform_too(fresh_api_client: requests.Session) -> None:
    api_client = fresh_api_client
    answers: Counter[tuple[str, str, int]] = Counter()

    def call_kwargs(self: Any, case: schemathesis.Case) -> dict[str, Any]:
        return {"session": api_client, "base_url": BASE_URL}

    def count(self: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
        answers[(case.method, case.path, response.status_code)] += 1

    # The document's links start at POST /jobs: the run keeps to the /jobs operations, so its few derandomized steps
    # are spent on creating jobs and following links, however many other routes the API grows (the property run
    # above covers every operation).
    linked = schema.include(path_regex=r"^/jobs(/|$)")
    machine = cast("type[APIStateMachine]", type("LinkedJobCalls", (linked.as_state_machine(),),
                                                  {"get_call_kwargs": call_kwargs, "after_call": count}))
    machine.run(settings=settings(max_examples=max(10, EXAMPLES // 2), stateful_step_count=6, deadline=None,
                                  derandomize=True, database=None, suppress_health_check=HEALTH))
    reached = {(method, path) for method, path, status in answers if status == 200 and "{job_id}" in path}
    assert reached, f"no linked call reached a created job; calls made: {dict(answers)}"


# What the property runs found (each was a 500, an undocumented status or a body off its schema) and the bounds added
# with the fixes, pinned here so a regression fails even on a run whose examples miss it.
FOUND = [
    pytest.param("POST", "/jobs", {"params": {"prompt": "x"}, "owner": "a\x00b"}, 422, id="nul-in-owner"),
    pytest.param("POST", "/jobs", {"params": {"prompt": "x\x00"}}, 422, id="nul-in-prompt"),
    pytest.param("POST", "/jobs", {"params": {"prompt": "x"}, "idempotency_key": "k\x00"}, 422, id="nul-in-key"),
    pytest.param("POST", "/jobs", {"params": {"prompt": "x"}, "priority": 2**31}, 422, id="priority-past-int32"),
    pytest.param("POST", "/jobs", '{"params": {"prompt": "\\ud800", "steps": 0}}', 422, id="lone-surrogate-echoed"),
    pytest.param("POST", "/jobs", {"params": {"prompt": "x", "input_image": "a.png"}}, 422, id="workflow-error-body"),
    pytest.param("POST", "/batches", b"\x0c\x12\xff7\xfe", 400, id="body-not-utf8"),
    pytest.param("GET", "/jobs?owner=a%00b", None, 422, id="nul-in-owner-filter"),
    pytest.param("GET", "/jobs/0", None, 422, id="malformed-id"),
    pytest.param("GET", "/jobs/00000000-0000-4000-8000-000000000000", None, 404, id="unknown-job"),
    pytest.param("DELETE", "/jobs/00000000-0000-4000-8000-000000000000", None, 404, id="cancel-unknown-job"),
    pytest.param("GET", "/jobs/00000000-0000-4000-8000-000000000000/images/0", None, 404, id="image-of-unknown-job"),
    pytest.param("GET", "/jobs/00000000/previews/99999999999999999999", None, 422, id="seq-past-bigint"),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), FOUND)
def test_found_cases_are_documented_client_errors(
    api_client: requests.Session, method: str, path: str, body: Any, status: int
) -> None:
    if isinstance(body, str | bytes):
        response = api_client.request(method, BASE_URL + path, data=body, headers={"content-type": "application/json"})
    else:
        response = api_client.request(method, BASE_URL + path, json=body)
    assert response.status_code == status, response.text
    assert ApiError.model_validate(response.json()).detail
    paths = schema.raw_schema["paths"]
    template = next(t for t in paths if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", t), path.split("?")[0]))
    assert str(status) in paths[template][method.lower()]["responses"], f"{status} is not documented"


def test_a_batch_whose_every_entry_is_refused_reports_them(api_client: requests.Session) -> None:
    made = api_client.post(BASE_URL + "/batches", json={"jobs": [{"params": {"prompt": "x", "input_image": "a.png"}},
                                                                  {"params": {"prompt": "y"}, "workflow": "nope"}]})
    assert made.status_code == 201, made.text
    result = made.json()
    assert result["jobs"] == [] and [e["index"] for e in result["errors"]] == [0, 1]
