"""The n8n examples in docs/n8n are importable workflows that call the job API as its OpenAPI document says."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

import atelier.api.jobs as job_api
from atelier.tools.catalog import list_templates
from atelier.tools.ledger.models import JobStatus
from atelier.tools.settings import load_settings

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "docs" / "n8n").glob("*.json"))
HTTP = "n8n-nodes-base.httpRequest"
TRIGGERS = {"n8n-nodes-base.manualTrigger", "n8n-nodes-base.scheduleTrigger", "n8n-nodes-base.webhook"}
EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)
NODE_REFERENCE = re.compile(r"""\$\(\s*['"]([^'"]+)['"]\s*\)""")


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    """The job API's OpenAPI document (building the app needs no database)."""
    spec: dict[str, Any] = job_api.build_job_api(load_settings()).openapi()
    return spec


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _strings(value: Any) -> Iterator[str]:
    """Every string anywhere in a node's parameters."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _operation(url: str, method: str, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The OpenAPI path template and operation an HTTP Request node's URL and method call."""
    assert url.startswith("={{") and "base_url" in url.split("}}", 1)[0], (
        f"{url!r}: build URLs as an expression that starts from the base URL setting, e.g. "
        "={{ $('Atelier settings').first().json.base_url }}/jobs"
    )
    path = EXPRESSION.sub("X", url.split("}}", 1)[1]).split("?", 1)[0]
    for template, operations in spec["paths"].items():
        if re.fullmatch(re.sub(r"\{[^/{}]+\}", "[^/]+", template), path) and method.lower() in operations:
            return template, operations[method.lower()]
    raise AssertionError(f"{method} {path} is not an operation of the job API")


def _request_model(operation: dict[str, Any]) -> type[BaseModel]:
    """The pydantic model of tools.api.jobs behind an operation's JSON request body."""
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    model: type[BaseModel] = getattr(job_api, ref.rsplit("/", 1)[-1])
    return model


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_is_a_well_formed_n8n_workflow(path: Path) -> None:
    flow = _load(path)
    assert isinstance(flow.get("name"), str) and flow["name"].strip()
    nodes, connections = flow["nodes"], flow["connections"]
    assert isinstance(nodes, list) and nodes and isinstance(connections, dict)
    names = [node["name"] for node in nodes]
    assert len(names) == len(set(names)), f"node names repeat: {names}"
    ids = [node["id"] for node in nodes if "id" in node]
    assert len(ids) == len(set(ids)), "node ids repeat"
    for node in nodes:
        assert isinstance(node["parameters"], dict), node["name"]
        assert re.fullmatch(r"n8n-nodes-base\.[A-Za-z]+", node["type"]), node["type"]
        assert isinstance(node["typeVersion"], int | float) and node["typeVersion"] >= 1, node["name"]
        position = node["position"]
        assert len(position) == 2 and all(isinstance(v, int | float) for v in position), node["name"]
        for text in _strings(node["parameters"]):
            for referenced in NODE_REFERENCE.findall(text):
                assert referenced in names, f"{node['name']} refers to a node {referenced!r} the workflow lacks"

    edges: dict[str, set[str]] = {}
    for source, kinds in connections.items():
        assert source in names, f"a connection leaves {source!r}, which is no node"
        for kind, outputs in kinds.items():
            assert kind == "main", f"{source}: only main connections are expected, not {kind!r}"
            for output in outputs:
                for target in output:
                    assert target["node"] in names, f"{source} connects to {target['node']!r}, which is no node"
                    assert target["type"] == "main" and isinstance(target["index"], int)
                    edges.setdefault(source, set()).add(target["node"])

    starts = [node["name"] for node in nodes if node["type"] in TRIGGERS]
    assert len(starts) == 1, f"one trigger expected, found {starts}"
    reached, todo = set(starts), list(starts)
    while todo:
        for target in edges.get(todo.pop(), ()):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    assert reached == set(names), f"nodes the trigger never reaches: {sorted(set(names) - reached)}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_http_requests_match_the_job_api(path: Path, openapi: dict[str, Any]) -> None:
    known_workflows = {t.name for t in list_templates().templates}
    statuses = set(get_args(JobStatus))
    validated = 0
    for node in _load(path)["nodes"]:
        params = node["parameters"]
        if node["type"] == "n8n-nodes-base.if":
            for condition in params["conditions"]["conditions"]:
                if "$json.status" in condition["leftValue"]:
                    assert condition["rightValue"] in statuses, f"{node['name']}: no job status is {condition!r}"
        if node["type"] != HTTP:
            continue
        method = params.get("method", "GET")
        template, operation = _operation(params["url"], method, openapi)
        if params.get("sendBody"):
            assert "requestBody" in operation, f"{node['name']}: {method} {template} takes no body"
            assert params.get("contentType", "json") == "json" and params.get("specifyBody") == "json", node["name"]
            body = params["jsonBody"]
            if isinstance(body, str) and body.startswith("="):
                continue  # an expression: only n8n can evaluate it
            parsed = json.loads(body) if isinstance(body, str) else body
            model = _request_model(operation)
            checked = model.model_validate(parsed)
            validated += 1
            entries = checked.jobs if isinstance(checked, job_api.BatchBody) else [checked]
            for entry in entries:
                assert isinstance(entry, job_api.JobBody)
                assert entry.workflow is None or entry.workflow in known_workflows, entry.workflow
        response = params.get("options", {}).get("response", {}).get("response", {})
        if response.get("responseFormat") == "file":
            assert any(not media.startswith("application/json")
                       for media in operation["responses"]["200"]["content"]), f"{template} is not a file download"
    assert validated, "no literal request body was checked against the API's models"


def test_the_examples_cover_submit_poll_download_and_batches(openapi: dict[str, Any]) -> None:
    called = set()
    for path in EXAMPLES:
        for node in _load(path)["nodes"]:
            if node["type"] == HTTP:
                method = node["parameters"].get("method", "GET")
                called.add((method, _operation(node["parameters"]["url"], method, openapi)[0]))
    assert {("POST", "/jobs"), ("GET", "/jobs/{job_id}"), ("GET", "/jobs/{job_id}/images/{n}"),
            ("POST", "/batches")} <= called
    for path in EXAMPLES:
        assert {"n8n-nodes-base.wait", "n8n-nodes-base.if"} <= {n["type"] for n in _load(path)["nodes"]}, path.name


def test_the_readme_names_every_example() -> None:
    readme = (EXAMPLES[0].parent / "README.md").read_text(encoding="utf-8")
    for path in EXAMPLES:
        assert f"`{path.name}`" in readme
    assert ":8765" in readme and ":2024" in readme and "/events" in readme
