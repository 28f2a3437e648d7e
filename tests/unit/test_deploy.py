"""deploy/: Docker Compose accepts the stack; every service is health-checked; names match settings and configs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from atelier.tools.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
ATELIER_SERVICES = {"chat", "api", "worker", "indexer", "langgraph", "mcp"}
PROFILES = {"comfyui", "ollama", "langgraph", "mcp"}
# Variables Docker Compose itself reads from .env.
COMPOSE_OWN = {"COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES"}


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _settings_names() -> set[str]:
    """Every environment variable tools/settings.py reads."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif alias is not None:
            names.add(str(alias))
    return names


def _env_example_names() -> set[str]:
    """KEY of every `KEY=value` line of .env.example, commented out or not."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.M))


def _compose_variables() -> set[str]:
    """Every ${VARIABLE} compose.yaml interpolates."""
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))


# --- Docker Compose itself ------------------------------------------------------------------------------------

def _compose_command() -> list[str] | None:
    """`docker compose` (v2) when the plugin is there, else Debian's `docker-compose` (v1.29), else None."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


@pytest.mark.parametrize("profiles", [[], sorted(PROFILES)], ids=["default", "all-profiles"])
def test_docker_compose_accepts_the_stack(tmp_path: Path, profiles: list[str]) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed; the structural tests below stand in")
    # What a user does: copy .env.example to .env next to compose.yaml.
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns(".env"))
    shutil.copy(ENV_EXAMPLE, tmp_path / "deploy" / ".env")
    args = [*command, "-f", str(tmp_path / "deploy" / "compose.yaml")]
    for profile in profiles:
        args += ["--profile", profile]
    result = subprocess.run([*args, "config"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["services"]["worker"]["environment"]["DATABASE_URL"] == \
        "postgresql://atelier:change-me-postgres@postgres:5432/atelier"
    if profiles:
        assert set(resolved["services"]) >= PROFILES
    # Without .env, the missing passwords are named.
    (tmp_path / "deploy" / ".env").unlink()
    missing = subprocess.run([*args, "config"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert missing.returncode != 0 and "PASSWORD" in missing.stdout + missing.stderr


# --- structure --------------------------------------------------------------------------------------------------

def test_the_stack_has_every_service_and_the_gpu_services_are_optional() -> None:
    services = _services()
    assert {"chat", "api", "worker", "indexer", "postgres", "qdrant", "minio", "prometheus", "grafana",
            "comfyui", "ollama", "langgraph", "mcp"} <= set(services)
    for name, service in services.items():
        profiles = set(service.get("profiles", []))
        assert profiles <= PROFILES, name
        if name in {"comfyui", "ollama", "langgraph", "mcp"}:
            assert profiles == {name}, f"{name} must be opt-in through its own profile"
        else:
            assert not profiles, f"{name} is part of the default stack"
    for name in ("comfyui", "ollama"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"], name


def test_every_service_has_a_healthcheck_or_says_why_not() -> None:
    for name, service in _services().items():
        check = service.get("healthcheck", {})
        if check.get("disable"):
            assert service.get("labels", {}).get("atelier.healthcheck", "").startswith("none:"), name
            continue
        test = check.get("test")
        assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, name
        assert check.get("interval") and check.get("timeout") and check.get("retries"), name


def test_healthchecks_probe_the_ports_the_services_listen_on() -> None:
    services = _services()
    for name, port in {"chat": 7860, "api": 8765, "worker": 9464, "langgraph": 2024, "mcp": 8766}.items():
        service = services[name]
        assert str(port) in " ".join(service["healthcheck"]["test"]), name
        listens = " ".join(service["command"]) + " " + str(service.get("environment", {}).get("ATELIER_CHAT_PORT"))
        assert str(port) in listens, name


def test_atelier_services_share_one_image_and_the_stores() -> None:
    services = _services()
    for name in ATELIER_SERVICES:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        assert service["env_file"] == ".env", name
        assert "atelier-data:/data" in service["volumes"], name
        assert set(service["depends_on"]) == {"postgres", "qdrant", "minio"}, name
        assert all(dep["condition"] == "service_healthy" for dep in service["depends_on"].values()), name
        env = service["environment"]
        assert env["QDRANT_URL"] == "http://qdrant:6333" and env["ATELIER_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert "@postgres:5432/" in env["DATABASE_URL"]
        assert "host.docker.internal:host-gateway" in service["extra_hosts"], name
    assert services["chat"]["environment"]["ATELIER_CHAT_WORKER"] == "false"
    assert "container_name" not in services["worker"] and "ports" not in services["worker"], "worker must scale"


def test_atelier_environment_names_are_settings() -> None:
    known = _settings_names()
    for name in ATELIER_SERVICES:
        unknown = set(_services()[name]["environment"]) - known
        assert not unknown, f"{name}: not read by tools/settings.py: {unknown}"


def test_env_example_names_are_settings_or_compose_variables() -> None:
    names = _env_example_names()
    unknown = names - _settings_names() - _compose_variables() - COMPOSE_OWN
    assert not unknown, f".env.example names nothing reads: {sorted(unknown)}"
    undocumented = _compose_variables() - names
    assert not undocumented, f"compose.yaml variables missing from .env.example: {sorted(undocumented)}"
    for required in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "COMFYUI_URLS",
                     "OLLAMA_URL"):
        assert re.search(rf"^{required}=\S", ENV_EXAMPLE.read_text(), flags=re.M), required


def test_bind_mounts_exist_and_prometheus_scrapes_the_services() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["atelier-api"]["static_configs"][0]["targets"] == ["api:8765"]
    assert jobs["atelier-chat"]["static_configs"][0]["targets"] == ["chat:7860"]
    assert jobs["atelier-chat"]["metrics_path"] == "/api/metrics"
    workers = jobs["atelier-workers"]["dns_sd_configs"][0]
    assert workers["names"] == ["worker"] and workers["port"] == 9464
    assert prometheus["rule_files"] == ["alerts.yml"]


def test_dockerfile_installs_the_project_on_python_311_slim() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, flags=re.M)
    assert "pip install /app" in text and "torch==2.13.0" in text
    assert re.search(r"^USER atelier$", text, flags=re.M)
    pinned = re.search(r'"torch==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned and f"torch=={pinned.group(1)}" in text, "the Dockerfile's CPU torch must match pyproject's pin"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests", ".env"} <= set(ignored)


def test_readme_says_how_to_deploy_and_scale_out() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docker compose -f deploy/compose.yaml" in readme
    assert "--scale worker=" in readme and "COMFYUI_URLS" in readme
    for metric in ("atelier_owner_gpu_seconds_total", "atelier_comfyui_up", "atelier_api_requests_total"):
        assert metric in readme, metric
