"""Alert rules pass promtool's checks and unit tests; dashboards are valid and use only metrics the app exports."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from prometheus_client import CollectorRegistry

from atelier.api.jobs import build_job_api
from atelier.tools.ledger.service import LedgerService
from atelier.tools.metrics.comfy_probe import ComfyProbeCollector
from atelier.tools.metrics.usage import LedgerPool, UsageCollector
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from atelier.tools.worker.metrics import WorkerMetrics
from tests.fakes.comfyui_server import FakeComfyUI

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Series Prometheus makes itself, not the app.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# What Grafana substitutes into queries, with a value of the right kind for promtool.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m"}


# --- promtool --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def promtool() -> str:
    """Debian's promtool (package `prometheus`; .ci/run installs it)."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            raise RuntimeError("CI must install Debian's prometheus package for promtool (see .ci/run)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_alert_rules_and_prometheus_config_pass_promtool_check(promtool: str) -> None:
    rules = _run(promtool, "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _run(promtool, "check", "config", "--syntax-only", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_alert_rules_unit_tests_pass(promtool: str) -> None:
    result = _run(promtool, "test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_alert_unit_tests_catch_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The unit tests are not vacuous: loosen every threshold and they fail."""
    broken = (PROMETHEUS / "alerts.yml").read_text()
    for old, new in [("== 0", "== 7"), ("> 50", "> 5000"), ("> 900", "> 90000"), ("> 0.2", "> 0.9"),
                     ("< 0.1", "< 0.001"), ("> 90", "> 9000")]:
        assert old in broken, old
        broken = broken.replace(old, new)
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path / "alerts_test.yml")
    result = _run(promtool, "test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode != 0
    failed = set(re.findall(r"alertname: (\w+)", result.stdout + result.stderr))
    assert failed == _alert_names(), failed


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """Every dashboard query is valid PromQL (checked by promtool as recording rules)."""
    rules = [{"record": f"dashboard:q{n}", "expr": _grafana_free(expr)} for n, expr in enumerate(_dashboard_exprs())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --- structure -------------------------------------------------------------------------------------------------

def _alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _alert_names() -> set[str]:
    return {rule["alert"] for rule in _alert_rules()}


def test_the_required_alerts_exist_with_severity_and_text() -> None:
    names = _alert_names()
    for required in ("AtelierComfyUIDown", "AtelierQueueBacklog", "AtelierJobFailureRateHigh", "AtelierVRAMNearFull",
                     "AtelierWorkerHeartbeatMissing"):
        assert required in names
    for rule in _alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    doc = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    fired: set[str] = set()
    silent: set[str] = set()
    for case in doc["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else silent).add(check["alertname"])
    assert fired == _alert_names(), _alert_names() - fired
    assert silent == _alert_names(), _alert_names() - silent


def _dashboard_panels(path: Path) -> list[dict[str, Any]]:
    doc = json.loads(path.read_text())
    panels: list[dict[str, Any]] = []
    for panel in doc["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def _dashboard_exprs() -> list[str]:
    return [target["expr"] for path in DASHBOARDS for panel in _dashboard_panels(path)
            for target in panel.get("targets", [])]


def _grafana_free(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_dashboards_are_provisioned_json_on_the_provisioned_datasource() -> None:
    assert DASHBOARDS, "no dashboard in deploy/grafana/dashboards"
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {source["uid"] for source in datasources["datasources"]}
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "atelier.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
    seen_uids: set[str] = set()
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        assert doc["uid"] not in seen_uids and doc["title"], path
        seen_uids.add(doc["uid"])
        panels = _dashboard_panels(path)
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] in uids, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids and target["expr"].strip(), panel["title"]


def test_the_dashboard_has_the_panels_the_issue_asks_for() -> None:
    exprs = " ".join(_dashboard_exprs())
    for metric in ("atelier_jobs", "atelier_job_queue_wait_seconds_bucket", "atelier_owner_gpu_seconds_total",
                   "atelier_owner_cost_total", "atelier_cache_hits_total", "atelier_comfyui_vram_free_bytes",
                   "atelier_hotswap_unloads_total"):
        assert re.search(rf"\b{metric}\b", exprs), metric
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.95," in exprs


# --- metric names used vs exported ----------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
             "inf", "nan", "Inf", "NaN"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, labels, keywords and durations left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = re.findall(r"(?<![\w$.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {name for name in found if name not in _KEYWORDS}


def test_promql_metric_names() -> None:
    assert promql_metric_names(
        'histogram_quantile(0.95, sum by (le, route) (rate(a_seconds_bucket{route!="/x"}[$__rate_interval])))'
    ) == {"a_seconds_bucket"}
    assert promql_metric_names("max(x_up) == 0 and max(queue) > 1e-9") == {"x_up", "queue"}
    assert promql_metric_names("sum(rate(f_total[5m])) by (job) / ignoring(a) g offset 5m") == {"f_total", "g"}
    assert promql_metric_names('up{job=~"atelier-.*"} == 0') == {"up"}


def _sample_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry can expose: each family's samples, plus the suffixes its type implies."""
    suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                "summary": ["", "_sum", "_count", "_created"], "info": ["_info"]}
    names: set[str] = set()
    for family in registry.collect():
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
    return names


def _registry_of(*collectors: Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return registry


@pytest.fixture
def settings(tmp_path: Path, fake_comfy: FakeComfyUI) -> Settings:
    """Settings pointing at the fake ComfyUI."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls=fake_comfy.url)


@pytest_asyncio.fixture
async def svc(machine_pg_url: str, settings: Settings) -> AsyncIterator[LedgerService]:
    """A migrated ledger on a fresh database, with one job and one registered worker in it."""
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "out")) as service:
        async with service.ledger.pool.connection() as conn:
            await conn.execute("INSERT INTO workers (id, host, pid, servers) VALUES ('w1', 'box', 1, '{}')")
        yield service


@pytest_asyncio.fixture
async def exported(svc: LedgerService, settings: Settings) -> AsyncIterator[set[str]]:
    """Every metric name Atelier exports: a worker's, the ledger collectors', the API's (its /metrics scraped)."""
    from atelier.tools.ledger.models import JobRequest
    from atelier.tools.schemas import GenerationParams

    await svc.submit(JobRequest(params=GenerationParams(prompt="a fox", seed=1), owner="ana"))
    ledger = LedgerPool(svc.ledger.pool, asyncio.get_running_loop())
    api = build_job_api(settings, service=svc)
    api.state.ledger = svc
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://127.0.0.1") as http:
        assert (await http.get("/health")).status_code == 200
        scraped = await http.get("/metrics")
    assert scraped.status_code == 200
    # Collected from a thread, as Prometheus' scrapes are: the ledger series are read on this loop's pool.
    names = (_sample_names(WorkerMetrics().registry)
             | await asyncio.to_thread(_sample_names, _registry_of(UsageCollector(ledger)))
             | _sample_names(_registry_of(ComfyProbeCollector(settings.comfyui_urls)))
             | await asyncio.to_thread(_sample_names, api.state.metrics_registry))
    yield names


def _used_names(exprs: Iterable[str]) -> Iterator[tuple[str, str]]:
    for expr in exprs:
        for name in promql_metric_names(expr):
            yield name, expr


@pytest.mark.asyncio
async def test_alerts_and_dashboards_use_only_exported_metrics(exported: set[str]) -> None:
    assert {"atelier_owner_gpu_seconds_total", "atelier_comfyui_up", "atelier_api_requests_total",
            "atelier_worker_jobs_total", "atelier_jobs"} <= exported
    alert_exprs = [rule["expr"] for rule in _alert_rules()]
    unknown = {(name, expr) for name, expr in _used_names(alert_exprs + _dashboard_exprs())
               if name not in exported | PROMETHEUS_OWN}
    assert not unknown, f"metrics no Atelier process exports: {sorted(unknown)}"
    used = {name for name, _ in _used_names(alert_exprs + _dashboard_exprs())}
    assert len(used) >= 20, used
